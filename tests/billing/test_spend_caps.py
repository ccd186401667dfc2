"""Issue 16: a customer's own daily and monthly spend caps, set on the billing page and
through PATCH /api/billing/limits, refuse launches and starts once reached."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest

from billing import checks
from billing.errors import InvalidLimits, SpendCapReached
from billing.models import LedgerEntry, UserLimits
from billing.services import spend_caps_set
from tests.api.helpers import token_client
from tests.billing.helpers import credit
from tests.factories import TemplateFactory

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
_keys = itertools.count()


@pytest.fixture
def admission(settings):
    settings.GPUCLOUD_ADMISSION_CHECKS = [
        "billing.checks.balance_covers_launch",
        "billing.checks.limits_allow_launch",
        "billing.checks.spend_cap_allows_launch",
    ]


def charge(user, amount: str, at: datetime, *, kind: str = LedgerEntry.Kind.GPU_USAGE) -> LedgerEntry:
    """A debit as the meter posts it (the caps read the ledger, not the balance)."""
    return LedgerEntry.objects.create(
        user=user, kind=kind, amount_usd=-Decimal(amount), idempotency_key=f"cap-test-{next(_keys)}", at=at
    )


def test_the_daily_cap_counts_usage_since_midnight_utc(alice, gpu_types):
    rtx = gpu_types["rtx-5090"]
    spend_caps_set(user=alice, caps={"daily_cap_usd": "5"})
    charge(alice, "4.00", NOW - timedelta(days=1))  # yesterday: not today's spending
    charge(alice, "3.00", NOW.replace(hour=0, minute=0, second=1))
    charge(alice, "1.50", NOW - timedelta(minutes=5), kind=LedgerEntry.Kind.STORAGE)
    credit(alice, "100")  # a top-up is not spending and does not lower it
    checks.spend_cap_allows_launch(user=alice, gpu_type=rtx, template=None, now=NOW)  # $4.50 < $5
    charge(alice, "0.50", NOW - timedelta(minutes=1))
    with pytest.raises(SpendCapReached) as refused:
        checks.spend_cap_allows_launch(user=alice, gpu_type=rtx, template=None, now=NOW)
    assert refused.value.code == "billing:spend-cap-reached"
    assert refused.value.status == HTTPStatus.CONFLICT
    assert refused.value.detail == {"period": "day", "spent_usd": "5.00", "cap_usd": "5.00"}
    assert "daily cap is $5.00" in refused.value.message
    # The next UTC day starts from zero.
    checks.spend_cap_allows_launch(user=alice, gpu_type=rtx, template=None, now=NOW + timedelta(days=1))


def test_the_monthly_cap_counts_usage_since_the_first_of_the_month(alice, gpu_types):
    rtx = gpu_types["rtx-5090"]
    spend_caps_set(user=alice, caps={"monthly_cap_usd": "10"})
    charge(alice, "50", datetime(2026, 3, 31, 23, 59, tzinfo=UTC))  # last month
    charge(alice, "9.99", datetime(2026, 4, 1, 0, 0, tzinfo=UTC))
    checks.spend_cap_allows_launch(user=alice, gpu_type=rtx, template=None, now=NOW)
    charge(alice, "0.01", NOW)
    with pytest.raises(SpendCapReached) as refused:
        checks.spend_cap_allows_launch(user=alice, gpu_type=rtx, template=None, now=NOW)
    assert refused.value.detail["period"] == "month"


@pytest.mark.parametrize("value", ["-1", "abc", "NaN", "1e9", 1.5])
def test_a_cap_must_be_a_sane_amount(alice, value):
    with pytest.raises(InvalidLimits):
        spend_caps_set(user=alice, caps={"daily_cap_usd": value})
    assert not UserLimits.objects.filter(user=alice, daily_cap_usd__isnull=False).exists()


def test_the_api_sets_the_caps_and_a_launch_at_the_cap_is_refused(alice, this_host, admission):
    api = token_client(alice)
    credit(alice, "20")
    response = api.patch("/api/billing/limits", {"daily_cap_usd": "2.00"}, format="json")
    assert response.status_code == HTTPStatus.OK, response.content
    assert response.json()["daily_cap_usd"] == "2.00"
    assert response.json()["monthly_cap_usd"] is None
    charge(alice, "2.00", datetime.now(UTC))
    body = response.json()
    assert set(body) >= {"max_instances", "max_gpus", "max_spend_per_hour_usd", "spent_today_usd"}

    launch = {"template": TemplateFactory().slug, "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]}
    refused = api.post("/api/gpu/instances", launch, format="json")
    assert refused.status_code == HTTPStatus.CONFLICT, refused.content
    assert refused.json()["error"]["code"] == "billing:spend-cap-reached"

    assert api.get("/api/billing/limits").json()["spent_today_usd"] == "2.00"
    # Clearing the cap (null) lets the launch through; the other cap is left alone.
    api.patch("/api/billing/limits", {"monthly_cap_usd": "100"}, format="json")
    response = api.patch("/api/billing/limits", {"daily_cap_usd": None}, format="json")
    assert (response.json()["daily_cap_usd"], response.json()["monthly_cap_usd"]) == (None, "100.00")
    assert api.post("/api/gpu/instances", launch, format="json").status_code == HTTPStatus.ACCEPTED

    bad = api.patch("/api/billing/limits", {"monthly_cap_usd": "-5"}, format="json")
    assert bad.status_code == HTTPStatus.BAD_REQUEST
    assert bad.json()["error"]["code"] == "billing:invalid-limits"


def test_the_billing_page_sets_the_caps(client, alice):
    client.force_login(alice)
    page = client.get("/billing/")
    assert page.status_code == HTTPStatus.OK
    assert b'id="spend-caps"' in page.content
    response = client.post("/billing/limits/", {"daily_cap_usd": "7.50", "monthly_cap_usd": ""})
    assert response.status_code == HTTPStatus.FOUND
    limits = UserLimits.objects.get(user=alice)
    assert (limits.daily_cap_usd, limits.monthly_cap_usd) == (Decimal("7.50"), None)
    assert b'value="7.50"' in client.get("/billing/").content
    refused = client.post("/billing/limits/", {"daily_cap_usd": "-1", "monthly_cap_usd": ""})
    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert b'data-code="billing:invalid-limits"' in refused.content
