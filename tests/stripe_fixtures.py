"""Stripe fixtures several suites use (billing, web, security): localstripe and a dj-stripe
webhook endpoint. Registered as a plugin by tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.billing.helpers import WEBHOOK_SECRET
from tests.processes import localstripe_start, stop_group


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
