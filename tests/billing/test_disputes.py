"""Disputes (chargebacks) reported by signed Stripe webhooks: the disputed amount is
debited once and the account's running instances stop; a won dispute is credited back
once, a lost one keeps its debit.

localstripe cannot raise a dispute, so the events are posted here signed as Stripe
signs them, to the endpoint dj-stripe verifies.
"""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

import pytest
from rest_framework.test import APIClient

from billing import selectors
from billing.management.commands.stripe_webhook_endpoint import EVENTS
from billing.models import LedgerEntry
from instances.models import Instance, InstanceEvent
from tests.billing.helpers import event_payload, instance_for, payment_intent, sign, webhook_path


def post_event(client, endpoint, kind: str, obj: dict, *, event_id: str | None = None) -> None:
    body = event_payload(kind, obj, event_id=event_id)
    response = client.post(
        webhook_path(endpoint), data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(body)
    )
    assert response.status_code == HTTPStatus.OK, response.content


def dispute(*, dispute_id: str, pi_id: str, amount_cents: int, status: str) -> dict:
    # As Stripe sends it: the charge and PaymentIntent by id, no metadata of ours.
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount_cents,
        "currency": "usd",
        "charge": f"ch_{pi_id}",
        "payment_intent": pi_id,
        "reason": "fraudulent",
        "status": status,
    }


@pytest.fixture
def topped_up(client, alice, webhook_endpoint):
    """Alice topped up $50 with PaymentIntent pi_stolen."""
    post_event(
        client,
        webhook_endpoint,
        "payment_intent.succeeded",
        payment_intent(pi_id="pi_stolen", user_id=alice.pk, amount_cents=5000),
    )
    assert selectors.balance_get(user=alice) == Decimal("50.00")


def running(user, gpu_types, host) -> Instance:
    instance = instance_for(user, gpu_types["rtx-5090"])
    Instance.objects.filter(pk=instance.pk).update(status=Instance.Status.RUNNING, host=host)
    instance.refresh_from_db()
    return instance


def test_a_dispute_debits_once_and_stops_the_accounts_running_instances(
    client, alice, bob, gpu_types, this_host, webhook_endpoint, topped_up
):
    alices = running(alice, gpu_types, this_host)
    bobs = running(bob, gpu_types, this_host)
    opened = dispute(dispute_id="dp_1", pi_id="pi_stolen", amount_cents=5000, status="needs_response")
    for _ in range(3):  # duplicate deliveries, and funds_withdrawn for the same dispute
        post_event(client, webhook_endpoint, "charge.dispute.created", opened, event_id="evt_dp_1_created")
    post_event(client, webhook_endpoint, "charge.dispute.funds_withdrawn", opened)

    debit = LedgerEntry.objects.get(user=alice, kind="dispute")
    assert (debit.idempotency_key, debit.amount_usd, debit.stripe_id) == ("dispute:dp_1", Decimal("-50.00"), "dp_1")
    assert debit.payment_intent_id == "pi_stolen"
    assert selectors.balance_get(user=alice) == Decimal("0.00")
    alices.refresh_from_db()
    assert alices.status == Instance.Status.STOPPING
    why = alices.events.get(kind=InstanceEvent.Kind.STOP_REQUESTED)
    assert why.source == "billing"
    assert "dp_1" in why.message
    bobs.refresh_from_db()
    assert bobs.status == Instance.Status.RUNNING


@pytest.mark.parametrize(
    ("outcome", "balance", "entries"),
    [("won", Decimal("50.00"), 2), ("lost", Decimal("0.00"), 1)],
)
def test_a_closed_dispute_is_credited_back_once_when_won_and_kept_when_lost(
    client, alice, webhook_endpoint, topped_up, outcome, balance, entries
):
    post_event(
        client,
        webhook_endpoint,
        "charge.dispute.created",
        dispute(dispute_id="dp_2", pi_id="pi_stolen", amount_cents=5000, status="needs_response"),
    )
    closed = dispute(dispute_id="dp_2", pi_id="pi_stolen", amount_cents=5000, status=outcome)
    for _ in range(2):
        post_event(client, webhook_endpoint, "charge.dispute.closed", closed, event_id="evt_dp_2_closed")
    assert selectors.balance_get(user=alice) == balance
    assert LedgerEntry.objects.filter(user=alice, kind="dispute").count() == entries
    if outcome == "won":
        assert LedgerEntry.objects.get(idempotency_key="dispute-reversal:dp_2").amount_usd == Decimal("50.00")

    # Both sides are shown to the customer in the ledger.
    api = APIClient()
    api.force_authenticate(alice)
    rows = api.get("/api/billing/ledger").json()
    rows = rows.get("results", rows) if isinstance(rows, dict) else rows
    assert [r["amount_usd"] for r in rows if r["kind"] == "dispute"] == (
        ["50.00", "-50.00"] if outcome == "won" else ["-50.00"]
    )


def test_a_created_delivered_after_a_won_close_posts_nothing_more(client, alice, webhook_endpoint, topped_up):
    opened = dispute(dispute_id="dp_3", pi_id="pi_stolen", amount_cents=2000, status="needs_response")
    post_event(client, webhook_endpoint, "charge.dispute.closed", {**opened, "status": "won"})
    post_event(client, webhook_endpoint, "charge.dispute.created", opened)
    assert selectors.balance_get(user=alice) == Decimal("50.00")
    assert LedgerEntry.objects.filter(user=alice, kind="dispute").count() == 2


def test_an_inquiry_withdraws_nothing_and_is_not_debited(client, alice, webhook_endpoint, topped_up):
    inquiry = dispute(dispute_id="dp_4", pi_id="pi_stolen", amount_cents=5000, status="warning_needs_response")
    post_event(client, webhook_endpoint, "charge.dispute.created", inquiry)
    assert selectors.balance_get(user=alice) == Decimal("50.00")


def test_a_dispute_of_an_unknown_payment_posts_nothing(client, alice, webhook_endpoint):
    post_event(
        client,
        webhook_endpoint,
        "charge.dispute.created",
        dispute(dispute_id="dp_5", pi_id="pi_elsewhere", amount_cents=900, status="needs_response"),
    )
    assert not LedgerEntry.objects.exists()


def test_the_admin_lists_dispute_entries(client, alice, olga, webhook_endpoint, topped_up):
    post_event(
        client,
        webhook_endpoint,
        "charge.dispute.created",
        dispute(dispute_id="dp_6", pi_id="pi_stolen", amount_cents=5000, status="needs_response"),
    )
    client.force_login(olga)
    response = client.get("/admin/billing/ledgerentry/", {"kind__exact": "dispute"})
    assert response.status_code == HTTPStatus.OK
    assert b"dispute:dp_6" in response.content


def test_the_endpoint_command_subscribes_to_disputes():
    assert {"charge.dispute.created", "charge.dispute.closed"} <= set(EVENTS)
