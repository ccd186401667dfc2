"""Receivers of billing: a new user gets a billing account; price edits enter the rate
history; Stripe webhooks are handled.

Connected when the app is ready (billing.apps).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone
from djstripe.signals import webhook_pre_process, webhook_pre_validate

from billing.services.ledger import account_get_or_create
from billing.services.prices import gpu_rate_record
from billing.webhooks import webhook_pre_process as handle_webhook
from instances.models import GpuType


@receiver(pre_save, sender=GpuType, dispatch_uid="billing.record_rate_change")
def record_rate_change(sender: Any, instance: GpuType, raw: bool = False, **kwargs: Any) -> None:
    # Price edits made anywhere (the admin, a shell) enter the history billing prices
    # segments from; gpu_type_rate_set records its own at its `now` first, and then
    # gpu_rate_record finds the change already there and records nothing.
    if raw or instance.pk is None:
        return
    old = GpuType.objects.filter(pk=instance.pk).values_list("rate_per_hour", flat=True).first()
    if old is not None and old != instance.rate_per_hour:
        gpu_rate_record(gpu_type=instance, old_rate=old, new_rate=instance.rate_per_hour, now=timezone.now())


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="billing.account_for_new_user")
def account_for_new_user(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    # Every user has a billing account from sign-up (allauth, the admin, createsuperuser,
    # a shell), so an operator finds anyone in admin -> Billing accounts and can credit them.
    if created and not raw:
        account_get_or_create(user=instance)


webhook_pre_process.connect(handle_webhook, dispatch_uid="billing.webhook_pre_process")


@receiver(webhook_pre_validate, dispatch_uid="billing.ignore_secret_override")
def ignore_secret_override(sender: Any, instance: Any, **kwargs: Any) -> None:
    # With DEBUG on, dj-stripe verifies against a secret the *request* may supply
    # (X-Djstripe-Webhook-Secret, for the Stripe CLI): anyone could sign their own
    # "payment succeeded". Only the endpoint's stored secret may vouch for money.
    for name in [h for h in instance.headers if h.lower() == "x-djstripe-webhook-secret"]:
        del instance.headers[name]
