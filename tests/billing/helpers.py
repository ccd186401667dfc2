"""Billing test helpers: a controllable clock's events on bare instance rows, signed Stripe
webhook payloads, credits."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime
from decimal import Decimal

from billing import services
from instances.models import Instance, InstanceEvent
from tests.factories import InstanceFactory, TemplateFactory

WEBHOOK_SECRET = "whsec_billing_tests_0123456789abcdef"


def sign(body: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header made as Stripe makes it: HMAC-SHA256 of "t.body"."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def webhook_path(endpoint) -> str:
    return f"/stripe/webhook/{endpoint.djstripe_uuid}/"


def event_payload(kind: str, obj: dict, *, event_id: str | None = None) -> str:
    return json.dumps(
        {
            "id": event_id or f"evt_{obj['id']}_{kind}",
            "object": "event",
            "type": kind,
            "livemode": False,
            "created": int(time.time()),
            "api_version": "2024-06-20",
            "data": {"object": obj},
        }
    )


def payment_intent(*, pi_id: str, user_id: int, amount_cents: int, currency: str = "usd") -> dict:
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount_cents,
        "amount_received": amount_cents,
        "currency": currency,
        "status": "succeeded",
        "customer": None,
        "metadata": {"user_id": str(user_id), "purpose": "topup"},
    }


class Clock:
    """The time billing is told (`now=`); tests move it by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> datetime:
        from datetime import timedelta

        self.now = self.now + timedelta(seconds=seconds)
        return self.now


def instance_for(user, gpu_type, *, storage_gb: int = 20) -> Instance:
    return InstanceFactory(owner=user, gpu_type=gpu_type, template=TemplateFactory(), storage_gb=storage_gb)


def event(instance: Instance, kind: str, at: datetime, **data) -> InstanceEvent:
    """A lifecycle fact as instances writes it (the contract billing reads)."""
    return InstanceEvent.objects.create(instance=instance, kind=kind, at=at, source="worker", data=data)


def credit(user, amount: str) -> None:
    services.ledger_post(
        user_id=user.pk, kind="adjustment", amount_usd=Decimal(amount), idempotency_key=f"test-credit:{uuid.uuid4()}"
    )
