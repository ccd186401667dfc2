"""Billing fixtures: a controllable clock's events on bare instance rows, localstripe,
and a dj-stripe webhook endpoint whose payloads tests sign for real."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from billing import services
from instances.models import Instance, InstanceEvent
from tests.factories import InstanceFactory, TemplateFactory
from tests.processes import localstripe_start, stop_group

WEBHOOK_SECRET = "whsec_billing_tests_0123456789abcdef"


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    """localstripe on 127.0.0.1 in a subprocess, with the Stripe client pointed at it."""
    proc, url = localstripe_start(log_path=Path(settings.VAR_DIR) / "localstripe.log")
    previous = getattr(settings, "STRIPE_API_HOST", None)
    settings.STRIPE_API_HOST = url
    yield url
    if previous is None:
        del settings.STRIPE_API_HOST
    else:
        settings.STRIPE_API_HOST = previous
    stop_group(proc, timeout=10)


@pytest.fixture
def webhook_endpoint(db):
    from djstripe.models import WebhookEndpoint

    return WebhookEndpoint.objects.create(
        id="we_billing_tests",
        url="http://127.0.0.1/stripe/webhook/",
        secret=WEBHOOK_SECRET,
        enabled_events=["*"],
        status="enabled",
        livemode=False,
        api_version="2024-06-20",
    )


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
