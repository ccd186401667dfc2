"""Operators: balances, a credit/debit with a reason recorded with the operator, the
read-only ledger, usage with its summary and CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest

from billing import selectors, services
from billing.models import LedgerEntry, UsageRecord
from tests.billing.helpers import credit, event, instance_for


@pytest.fixture
def operator(client, olga):
    client.force_login(olga)
    return client


def test_an_operator_credits_and_debits_a_user_with_a_reason(operator, olga, alice):
    url = f"/admin/billing/billingaccount/adjust/{alice.pk}/"
    assert operator.get(url).status_code == HTTPStatus.OK
    response = operator.post(url, {"amount_usd": "15.00", "reason": "Outage compensation"})
    assert response.status_code == HTTPStatus.FOUND
    operator.post(url, {"amount_usd": "-2.50", "reason": "Manual correction"})
    entries = LedgerEntry.objects.filter(user=alice).order_by("id")
    assert [(e.kind, e.amount_usd, e.operator, e.reason) for e in entries] == [
        ("adjustment", Decimal("15.00"), olga, "Outage compensation"),
        ("adjustment", Decimal("-2.50"), olga, "Manual correction"),
    ]
    assert selectors.balance_get(user=alice) == Decimal("12.50")
    assert "12.50" in operator.get("/admin/billing/billingaccount/").content.decode()


def test_an_adjustment_needs_a_reason_and_an_amount(operator, alice):
    url = f"/admin/billing/billingaccount/adjust/{alice.pk}/"
    assert operator.post(url, {"amount_usd": "0", "reason": "nothing"}).status_code == HTTPStatus.OK
    assert operator.post(url, {"amount_usd": "5", "reason": ""}).status_code == HTTPStatus.OK
    assert not LedgerEntry.objects.exists()


def test_a_customer_cannot_adjust(client, alice):
    client.force_login(alice)
    response = client.post(f"/admin/billing/billingaccount/adjust/{alice.pk}/", {"amount_usd": "99", "reason": "me"})
    assert response.status_code == HTTPStatus.FOUND  # to the admin login
    assert not LedgerEntry.objects.exists()


def test_the_ledger_is_read_only(operator, alice):
    credit(alice, "5.00")
    entry = LedgerEntry.objects.get()
    assert operator.get("/admin/billing/ledgerentry/").status_code == HTTPStatus.OK
    page = operator.get(f"/admin/billing/ledgerentry/{entry.pk}/change/")
    assert page.status_code == HTTPStatus.OK
    assert (
        operator.post(f"/admin/billing/ledgerentry/{entry.pk}/delete/", {"post": "yes"}).status_code
        == HTTPStatus.FORBIDDEN
    )
    assert operator.get("/admin/billing/ledgerentry/add/").status_code == HTTPStatus.FORBIDDEN
    assert LedgerEntry.objects.count() == 1


def test_usage_summary_and_csv_export(operator, alice, bob, gpu_types):
    start = datetime(2026, 1, 5, tzinfo=UTC)
    for user, sku in ((alice, "rtx-5090"), (alice, "rtx-5090"), (bob, "rtx-pro-6000")):
        instance = instance_for(user, gpu_types[sku])
        event(instance, "started", start)
        event(instance, "ended", start + timedelta(hours=2))
    services.meter_run(now=start + timedelta(hours=3))

    page = operator.get("/admin/billing/usagerecord/", {"kind__exact": "gpu"})
    assert page.status_code == HTTPStatus.OK
    summary = page.context_data["usage_summary"]
    rows = {(r["user__username"], r["gpu_type__sku"]): r for r in summary}
    assert rows[("alice", "rtx-5090")]["segments"] == 2
    assert rows[("alice", "rtx-5090")]["cost_usd"] == Decimal("5.96")
    assert rows[("bob", "rtx-pro-6000")]["seconds"] == 7200
    assert "Usage per user, GPU type and month" in page.content.decode()

    ids = list(UsageRecord.objects.filter(kind="gpu").values_list("pk", flat=True))
    export = operator.post(
        "/admin/billing/usagerecord/", {"action": "export_csv", "_selected_action": [str(i) for i in ids]}
    )
    assert export["Content-Type"] == "text/csv"
    lines = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert len(lines) == 3
    assert {line["cost_usd"] for line in lines} == {"2.98", "5.98"}
    assert {line["user"] for line in lines} == {"alice", "bob"}
