"""A password change revokes every API token of the account, and the customer is told.

A token outlives the session it was made in: whoever changes a password because it
leaked must not leave a token made with it working. The hook is the user row's
pre_save, so every path counts: allauth's change and reset forms, Django admin's
"change password", a shell's `set_password()`. Django marks a new password by
`_password` (set by set_password, cleared by save); its own silent re-hash at login
(a raised iteration count) leaves it None, so an upgrade revokes nothing.

The customer is told by email (every path, when any token was revoked) and, on
allauth's pages, by a message on the next page.
"""

from __future__ import annotations

from typing import Any

from allauth.account.signals import password_changed, password_reset
from django.conf import settings
from django.contrib import messages
from django.core.mail import send_mail
from django.db import transaction
from django.db.models.signals import pre_save
from django.dispatch import receiver
from django.http import HttpRequest

from instances.access.tokens import tokens_revoke_all

# Set on the user object by the pre_save below: how many tokens its new password revoked.
REVOKED_ATTR = "_gpucloud_tokens_revoked"


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="tokens-password-change")
def _password_changing(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """Side effects: revokes the user's tokens (before the row is written: should the
    save fail, the tokens are gone and the old password stays, the safe way round) and
    sends the email once the transaction commits."""
    if raw or instance._state.adding or getattr(instance, "_password", None) is None:
        return
    revoked = tokens_revoke_all(user=instance)
    setattr(instance, REVOKED_ATTR, revoked)
    if revoked and instance.email:
        email, name = instance.email, instance.get_username()
        transaction.on_commit(lambda: _tell_by_email(email=email, name=name, revoked=revoked))


def _tell_by_email(*, email: str, name: str, revoked: int) -> None:
    """Side effect: one email; a mail server that fails is logged by Django, not raised."""
    send_mail(
        subject="GPU Cloud: your password was changed, your API tokens revoked",
        message=(
            f"Hello {name},\n\nThe password of your GPU Cloud account was changed. "
            f"{revoked} API token{'s' if revoked != 1 else ''} made before the change "
            f"{'were' if revoked != 1 else 'was'} revoked and no longer work{'' if revoked != 1 else 's'}: "
            "make new ones on the API tokens page.\n\n"
            "If you did not change your password, reset it at once and write to the operator.\n"
        ),
        from_email=None,
        recipient_list=[email],
        fail_silently=True,
    )


@receiver(password_changed, dispatch_uid="tokens-password-changed-message")
@receiver(password_reset, dispatch_uid="tokens-password-reset-message")
def _tell_on_the_page(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    """Side effect: a message on the next page, when the change revoked any token."""
    revoked = getattr(user, REVOKED_ATTR, 0)
    if revoked:
        messages.warning(
            request,
            f"Your {revoked} API token{'s were' if revoked != 1 else ' was'} revoked with the old password: "
            "make new ones on the API tokens page.",
        )
