"""Notifications: which channels an event goes to, the email, the webhook deliveries.

`notify()` is what the lifecycle and billing call (in the transaction that made the
event: it acts when that commits). Email is sent at once (failures logged, never
raised); each webhook delivery is a row, attempted by a Celery task that retries with
exponential backoff (instances.notify.tasks) and logs every attempt's status code.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from instances.access.crypto import decrypt, encrypt
from instances.notify import webhooks
from instances.notify.errors import InvalidPreference, InvalidWebhook, NotFound, TooManyWebhooks
from instances.notify.messages import compose
from instances.notify.models import Channel, Event, NotificationPreference, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)
Delivery = WebhookDelivery.Status


def channels_for(*, user: Any, event: str) -> set[str]:
    """The channels `event` goes to for `user` (each is on unless turned off)."""
    off = set(
        NotificationPreference.objects.filter(user=user, event=event, enabled=False).values_list("channel", flat=True)
    )
    return {c for c in Channel.values if c not in off}


def preferences(*, user: Any) -> dict[str, dict[str, bool]]:
    """{event: {channel: on}} for every event and channel."""
    rows = {(p.event, p.channel): p.enabled for p in NotificationPreference.objects.filter(user=user)}
    return {e: {c: rows.get((e, c), True) for c in Channel.values} for e in Event.values}


def preferences_set(*, user: Any, wanted: dict[str, dict[str, bool]]) -> dict[str, dict[str, bool]]:
    """Set some events' channels on or off. Raises InvalidPreference for an unknown
    event or channel (and changes nothing)."""
    for event, channels in wanted.items():
        if not isinstance(channels, dict) or event not in Event.values:
            raise InvalidPreference(detail={"event": event})
        unknown = [c for c in channels if c not in Channel.values]
        if unknown:
            raise InvalidPreference(detail={"event": event, "channels": unknown})
    for event, channels in wanted.items():
        for channel, enabled in channels.items():
            NotificationPreference.objects.update_or_create(
                user=user, event=event, channel=channel, defaults={"enabled": bool(enabled)}
            )
    return preferences(user=user)


def notify(*, user: Any, event: str, data: dict[str, Any]) -> None:
    """Tell `user` about `event` on their channels once the current transaction commits."""
    transaction.on_commit(lambda: _send(user_id=user.pk, event=event, data=data))


def _send(*, user_id: int, event: str, data: dict[str, Any]) -> None:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return
    channels = channels_for(user=user, event=event)
    if Channel.EMAIL in channels and user.email:
        email_send(user=user, event=event, data=data)
    if Channel.WEBHOOK in channels:
        event_id = "evt_" + secrets.token_hex(10)
        payload = {
            "id": event_id,
            "type": event,
            "created": timezone.now().isoformat(),
            "data": data,
        }
        for endpoint in WebhookEndpoint.objects.filter(owner=user, enabled=True):
            delivery_enqueue(
                WebhookDelivery.objects.create(endpoint=endpoint, event=event, event_id=event_id, payload=payload)
            )


def email_send(*, user: Any, event: str, data: dict[str, Any]) -> bool:
    """The event's email, as text and HTML. Returns whether it was handed to the backend."""
    subject, lines = compose(event, data)
    context = {"username": user.get_username(), "lines": lines, "event_label": Event(event).label}
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("instances/notify/email.txt", context),
        to=[user.email],
    )
    message.attach_alternative(render_to_string("instances/notify/email.html", context), "text/html")
    try:
        message.send()
    except Exception:  # a mail server's failure must not undo or stop what was notified
        logger.exception("email of %s to user %s failed", event, user.pk)
        return False
    return True


def delivery_enqueue(delivery: WebhookDelivery, *, countdown: int = 0) -> None:
    # Sent by name: the tasks module imports this one.
    current_app.send_task(
        "instances.notify.tasks.webhook_deliver", kwargs={"delivery_id": delivery.pk}, countdown=countdown
    )


def backoff_seconds(attempt: int) -> int:
    """Wait after the `attempt`-th failure: base, twice that, four times … (under an hour,
    the broker's visibility timeout)."""
    return min(3000, settings.GPUCLOUD_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1))


def delivery_attempt(*, delivery_id: int) -> int | None:
    """Attempt one delivery once; the seconds to wait before the next attempt, or None
    when it is over (succeeded, refused, out of attempts, or already being attempted)."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != Delivery.PENDING:
        return None
    attempt = delivery.attempt_count + 1
    # Claim this attempt: a task run twice (acks_late) sends it once.
    claimed = WebhookDelivery.objects.filter(pk=delivery.pk, status=Delivery.PENDING, attempt_count=attempt - 1)
    if not claimed.update(attempt_count=attempt):
        return None
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    secret = decrypt(delivery.endpoint.secret_encrypted)
    headers = {
        webhooks.SIGNATURE_HEADER: webhooks.signature(secret=secret, timestamp=int(time.time()), body=body),
        "User-Agent": "GPU-Cloud-Webhooks/1",
        "GpuCloud-Event": delivery.event,
    }
    now = timezone.now()
    try:
        outcome = webhooks.post(
            url=delivery.endpoint.url,
            body=body,
            headers=headers,
            allow_loopback=settings.GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK,
            timeout_seconds=settings.GPUCLOUD_WEBHOOK_TIMEOUT_SECONDS,
        )
    except webhooks.AddressRefused as exc:
        _record(delivery, attempt=attempt, at=now, code=None, error=str(exc), status=Delivery.REFUSED)
        return None
    if outcome.ok:
        _record(delivery, attempt=attempt, at=now, code=outcome.status_code, error="", status=Delivery.SUCCEEDED)
        return None
    if attempt >= settings.GPUCLOUD_WEBHOOK_MAX_ATTEMPTS:
        _record(
            delivery, attempt=attempt, at=now, code=outcome.status_code, error=outcome.error, status=Delivery.FAILED
        )
        return None
    wait = backoff_seconds(attempt)
    _record(delivery, attempt=attempt, at=now, code=outcome.status_code, error=outcome.error, retry_in=wait)
    return wait


def _record(
    delivery: WebhookDelivery,
    *,
    attempt: int,
    at: Any,
    code: int | None,
    error: str,
    status: str = Delivery.PENDING,
    retry_in: int | None = None,
) -> None:
    entry: dict[str, Any] = {"attempt": attempt, "at": at.isoformat(), "status_code": code}
    if error:
        entry["error"] = error
    if retry_in is not None:
        entry["next_attempt_at"] = (at + timedelta(seconds=retry_in)).isoformat()
    with transaction.atomic():
        locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        locked.attempts = [*locked.attempts, entry]
        locked.last_status_code = code
        locked.status = status
        if status != Delivery.PENDING:
            locked.finished_at = timezone.now()
        locked.save(update_fields=["attempts", "last_status_code", "status", "finished_at"])


def delivery_replay(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery's event again (same event id, a fresh signature) as a new delivery."""
    replay = WebhookDelivery.objects.create(
        endpoint=delivery.endpoint,
        event=delivery.event,
        event_id=delivery.event_id,
        payload=delivery.payload,
        replay_of=delivery,
    )
    transaction.on_commit(lambda: delivery_enqueue(replay))
    return replay


def endpoint_create(*, user: Any, url: str, description: str = "") -> tuple[WebhookEndpoint, str]:
    """Register a webhook URL; returns it and its signing secret (shown to the owner).

    Raises InvalidWebhook for a URL whose address is not allowed (checked again at each
    delivery), TooManyWebhooks past GPUCLOUD_WEBHOOKS_PER_USER."""
    try:
        webhooks.address_check(url, allow_loopback=settings.GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK)
    except webhooks.AddressRefused as exc:
        raise InvalidWebhook(str(exc), detail={"url": url}) from exc
    if WebhookEndpoint.objects.filter(owner=user).count() >= settings.GPUCLOUD_WEBHOOKS_PER_USER:
        raise TooManyWebhooks(detail={"limit": settings.GPUCLOUD_WEBHOOKS_PER_USER})
    secret = "whsec_" + secrets.token_urlsafe(24)
    endpoint = WebhookEndpoint.objects.create(
        owner=user, url=url, description=description, secret_encrypted=encrypt(secret)
    )
    return endpoint, secret


def endpoint_secret(endpoint: WebhookEndpoint) -> str:
    return decrypt(endpoint.secret_encrypted)


def endpoints_of(*, user: Any) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(owner=user)


def deliveries_of(*, user: Any) -> QuerySet[WebhookDelivery]:
    """The user's delivery log, newest first (another user's deliveries never appear)."""
    return WebhookDelivery.objects.filter(endpoint__owner=user).select_related("endpoint")


def delivery_get(*, user: Any, delivery_id: int) -> WebhookDelivery:
    delivery = deliveries_of(user=user).filter(pk=delivery_id).first()
    if delivery is None:
        raise NotFound(detail={"id": delivery_id})
    return delivery


def endpoint_delete(*, user: Any, endpoint_id: int) -> None:
    """Remove one of the user's endpoints (and its log). Raises NotFound for another's."""
    deleted, _ = endpoints_of(user=user).filter(pk=endpoint_id).delete()
    if not deleted:
        raise NotFound(detail={"id": endpoint_id})
