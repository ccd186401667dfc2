"""GET /api/billing/balance, /usage (paginated, by month) and /ledger, scoped to the caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from rest_framework.test import APIClient

from billing import services
from tests.billing.helpers import credit, event, instance_for


@pytest.fixture
def api(alice) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


def run(user, gpu_type, start: datetime, seconds: int) -> None:
    instance = instance_for(user, gpu_type)
    event(instance, "started", start)
    event(instance, "ended", start + timedelta(seconds=seconds))


def test_balance_is_shown_to_the_cent(api, alice):
    credit(alice, "20.00")
    services.ledger_post(user_id=alice.pk, kind="gpu-usage", amount_usd=Decimal("-0.004"), idempotency_key="x")
    body = api.get("/api/billing/balance").json()
    assert body == {"balance_usd": "20.00", "currency": "usd", "topup_min_usd": "5.00", "topup_max_usd": "5000.00"}


def test_usage_is_paginated_and_filtered_by_month(api, alice, bob, gpu_types):
    rtx = gpu_types["rtx-5090"]
    for day in range(3):
        run(alice, rtx, datetime(2026, 1, 10 + day, tzinfo=UTC), 3600)
    run(alice, rtx, datetime(2026, 2, 1, tzinfo=UTC), 90)
    run(bob, rtx, datetime(2026, 1, 15, tzinfo=UTC), 3600)
    services.meter_run(now=datetime(2026, 3, 1, tzinfo=UTC))

    january = api.get("/api/billing/usage", {"month": "2026-01", "limit": 2}).json()
    assert january["count"] == 6  # 3 GPU runs and 3 storage segments that started in January
    assert len(january["results"]) == 2
    assert january["next"]
    gpu = [r for r in api.get("/api/billing/usage", {"month": "2026-01"}).json()["results"] if r["kind"] == "gpu"]
    assert [r["cost_usd"] for r in gpu] == ["1.49", "1.49", "1.49"]
    assert gpu[0]["duration_seconds"] == 3600
    assert gpu[0]["gpu_type"] == "rtx-5090"
    assert gpu[0]["rate_per_hour_usd"] == "1.490000"
    february = api.get("/api/billing/usage", {"month": "2026-02"}).json()["results"]
    assert [(r["kind"], r["cost_usd"]) for r in february if r["kind"] == "gpu"] == [("gpu", "0.04")]


def test_a_bad_month_is_a_400_with_a_stable_code(api):
    response = api.get("/api/billing/usage", {"month": "January"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == "billing:invalid-month"


def test_the_ledger_lists_my_entries_only(api, alice, bob, gpu_types):
    credit(alice, "10.00")
    credit(bob, "99.00")
    run(alice, gpu_types["rtx-pro-6000"], datetime(2026, 1, 1, tzinfo=UTC), 30)
    services.meter_run(now=datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    body = api.get("/api/billing/ledger").json()
    kinds = sorted((e["kind"], e["amount_usd"]) for e in body["results"])
    assert ("adjustment", "10.00") in kinds
    assert ("gpu-usage", "-0.05") in kinds
    assert all(e["amount_usd"] != "99.00" for e in body["results"])


@pytest.mark.parametrize("path", ["/api/billing/balance", "/api/billing/usage", "/api/billing/ledger"])
def test_billing_needs_a_login(db, path):
    response = APIClient().get(path)
    assert response.status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN)
