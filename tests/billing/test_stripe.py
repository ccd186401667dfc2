"""Top-ups through Stripe (localstripe) and signature-verified webhooks."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from http import HTTPStatus

import pytest
from rest_framework.test import APIClient

from billing import selectors
from billing import stripe as billing_stripe
from billing.models import BillingAccount, LedgerEntry
from tests.billing.helpers import WEBHOOK_SECRET, event_payload, payment_intent, sign, webhook_path


def post_webhook(client, endpoint, body: str, signature: str | None):
    headers = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    return client.post(webhook_path(endpoint), data=body, content_type="application/json", **headers)


def test_a_signed_payment_succeeded_credits_once(client, alice, webhook_endpoint):
    body = event_payload(
        "payment_intent.succeeded", payment_intent(pi_id="pi_once", user_id=alice.pk, amount_cents=2000)
    )
    for _ in range(3):
        assert post_webhook(client, webhook_endpoint, body, sign(body)).status_code == HTTPStatus.OK
    entry = LedgerEntry.objects.get(user=alice)
    assert entry.kind == "topup"
    assert entry.idempotency_key == "topup:pi_once"
    assert entry.amount_usd == Decimal("20.00")
    assert selectors.balance_get(user=alice) == Decimal("20.00")


@pytest.mark.parametrize(
    "signature",
    [None, "t=1,v1=00", sign("{}", secret="whsec_someone_else"), "garbage"],
    ids=["missing", "stale", "wrong-secret", "garbage"],
)
def test_a_bad_signature_is_refused_and_changes_nothing(client, alice, webhook_endpoint, signature):
    body = event_payload(
        "payment_intent.succeeded", payment_intent(pi_id="pi_bad", user_id=alice.pk, amount_cents=5000)
    )
    if signature and signature.startswith("t=") and "v1=00" not in signature:
        signature = sign(body, secret="whsec_someone_else")
    assert post_webhook(client, webhook_endpoint, body, signature).status_code == HTTPStatus.BAD_REQUEST
    assert not LedgerEntry.objects.exists()
    assert selectors.balance_get(user=alice) == 0


def test_a_secret_sent_with_the_request_is_not_trusted_even_in_debug(client, alice, webhook_endpoint, settings):
    settings.DEBUG = True  # dj-stripe honours X-Djstripe-Webhook-Secret in DEBUG
    body = event_payload(
        "payment_intent.succeeded", payment_intent(pi_id="pi_forged", user_id=alice.pk, amount_cents=9900)
    )
    response = client.post(
        webhook_path(webhook_endpoint),
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, secret="whsec_attacker"),
        HTTP_X_DJSTRIPE_WEBHOOK_SECRET="whsec_attacker",
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not LedgerEntry.objects.exists()


def test_a_tampered_body_is_refused(client, alice, webhook_endpoint):
    body = event_payload("payment_intent.succeeded", payment_intent(pi_id="pi_t", user_id=alice.pk, amount_cents=500))
    signature = sign(body)
    tampered = body.replace('"amount_received": 500', '"amount_received": 500000')
    assert post_webhook(client, webhook_endpoint, tampered, signature).status_code == HTTPStatus.BAD_REQUEST
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_deliveries_of_one_event_credit_once(live_server, alice, webhook_endpoint):
    body = event_payload(
        "payment_intent.succeeded", payment_intent(pi_id="pi_race", user_id=alice.pk, amount_cents=2500)
    )
    signature = sign(body)
    url = live_server.url + webhook_path(webhook_endpoint)

    def deliver(_: int) -> int:
        request = urllib.request.Request(  # noqa: S310 (loopback live server)
            url, data=body.encode(), headers={"Content-Type": "application/json", "Stripe-Signature": signature}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback live server)
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(deliver, range(10)))
    assert statuses == [HTTPStatus.OK] * 10
    assert LedgerEntry.objects.filter(user=alice, kind="topup").count() == 1
    assert selectors.balance_get(user=alice) == Decimal("25.00")
    assert selectors.balance_from_ledger(user=alice) == Decimal("25.00")


def _refund_event(*, charge_id: str, pi_id: str, refunds: list[tuple[str, int]]) -> str:
    charge = {
        "id": charge_id,
        "object": "charge",
        "payment_intent": pi_id,
        "amount_refunded": sum(a for _, a in refunds),
        "refunds": {"object": "list", "data": [{"id": r, "amount": a, "status": "succeeded"} for r, a in refunds]},
    }
    return event_payload("charge.refunded", charge, event_id=f"evt_{charge_id}_{len(refunds)}")


def test_a_refund_debits_once_per_refund(client, alice, webhook_endpoint):
    paid = event_payload("payment_intent.succeeded", payment_intent(pi_id="pi_r", user_id=alice.pk, amount_cents=3000))
    post_webhook(client, webhook_endpoint, paid, sign(paid))
    first = _refund_event(charge_id="ch_r", pi_id="pi_r", refunds=[("re_1", 1000)])
    second = _refund_event(charge_id="ch_r", pi_id="pi_r", refunds=[("re_1", 1000), ("re_2", 500)])
    for body in (first, first, second, second):
        assert post_webhook(client, webhook_endpoint, body, sign(body)).status_code == HTTPStatus.OK
    refunds = LedgerEntry.objects.filter(user=alice, kind="refund").order_by("stripe_id")
    assert [(e.stripe_id, e.amount_usd) for e in refunds] == [("re_1", Decimal("-10.00")), ("re_2", Decimal("-5.00"))]
    assert selectors.balance_get(user=alice) == Decimal("15.00")


def test_out_of_order_deliveries_end_at_the_same_balance(client, alice, webhook_endpoint):
    BillingAccount.objects.filter(user=alice).update(stripe_customer_id="cus_alice")  # made at sign-up
    refund = _refund_event(charge_id="ch_o", pi_id="pi_o", refunds=[("re_o", 700)])
    refund = refund.replace('"payment_intent": "pi_o"', '"payment_intent": "pi_o", "customer": "cus_alice"')
    paid = event_payload("payment_intent.succeeded", payment_intent(pi_id="pi_o", user_id=alice.pk, amount_cents=1000))
    for body in (refund, paid, refund, paid):
        assert post_webhook(client, webhook_endpoint, body, sign(body)).status_code == HTTPStatus.OK
    assert selectors.balance_get(user=alice) == Decimal("3.00")
    assert LedgerEntry.objects.filter(user=alice).count() == 2


def _refund_object(*, refund_id: str, pi_id: str, amount_cents: int, status: str) -> dict:
    return {"id": refund_id, "object": "refund", "amount": amount_cents, "payment_intent": pi_id, "status": status}


@pytest.mark.parametrize("outcome", ["failed", "canceled"])
def test_a_pending_refund_that_fails_later_is_credited_back_once(client, alice, webhook_endpoint, outcome):
    paid = event_payload("payment_intent.succeeded", payment_intent(pi_id="pi_p", user_id=alice.pk, amount_cents=4000))
    post_webhook(client, webhook_endpoint, paid, sign(paid))
    pending = event_payload(
        "refund.created", _refund_object(refund_id="re_p", pi_id="pi_p", amount_cents=1500, status="pending")
    )
    assert post_webhook(client, webhook_endpoint, pending, sign(pending)).status_code == HTTPStatus.OK
    assert selectors.balance_get(user=alice) == Decimal("25.00")

    failed = event_payload(
        "refund.updated", _refund_object(refund_id="re_p", pi_id="pi_p", amount_cents=1500, status=outcome)
    )
    for body in (failed, failed, pending):
        assert post_webhook(client, webhook_endpoint, body, sign(body)).status_code == HTTPStatus.OK
    reversal = LedgerEntry.objects.get(idempotency_key="refund-reversal:re_p")
    assert reversal.amount_usd == Decimal("15.00")
    assert reversal.user == alice
    assert LedgerEntry.objects.filter(user=alice, kind="refund").count() == 2
    assert selectors.balance_get(user=alice) == Decimal("40.00")
    assert selectors.balance_from_ledger(user=alice) == Decimal("40.00")


def test_a_refund_that_fails_before_it_was_debited_posts_nothing(client, alice, webhook_endpoint):
    paid = event_payload("payment_intent.succeeded", payment_intent(pi_id="pi_f", user_id=alice.pk, amount_cents=2000))
    post_webhook(client, webhook_endpoint, paid, sign(paid))
    failed = event_payload(
        "refund.failed", _refund_object(refund_id="re_f", pi_id="pi_f", amount_cents=2000, status="failed")
    )
    for _ in range(2):
        assert post_webhook(client, webhook_endpoint, failed, sign(failed)).status_code == HTTPStatus.OK
    assert not LedgerEntry.objects.filter(user=alice, kind="refund").exists()
    assert selectors.balance_get(user=alice) == Decimal("20.00")


def test_another_currency_is_not_credited(client, alice, webhook_endpoint):
    body = event_payload(
        "payment_intent.succeeded", payment_intent(pi_id="pi_eur", user_id=alice.pk, amount_cents=900, currency="eur")
    )
    assert post_webhook(client, webhook_endpoint, body, sign(body)).status_code == HTTPStatus.OK
    assert not LedgerEntry.objects.exists()


# ---- the top-up API against localstripe ------------------------------------------------


@pytest.fixture
def api(alice) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


def test_a_topup_creates_a_payment_intent_for_the_chosen_amount(api, alice, localstripe):
    response = api.post("/api/billing/topups", {"amount_usd": "20.00"}, format="json")
    assert response.status_code == HTTPStatus.CREATED, response.content
    body = response.json()
    assert body["id"].startswith("pi_")
    assert body["client_secret"]
    assert body["amount_usd"] == "20.00"
    assert body["currency"] == "usd"
    assert BillingAccount.objects.get(user=alice).stripe_customer_id.startswith("cus_")
    # A second top-up reuses the customer.
    customer = BillingAccount.objects.get(user=alice).stripe_customer_id
    assert api.post("/api/billing/topups", {"amount_usd": "5"}, format="json").status_code == HTTPStatus.CREATED
    assert BillingAccount.objects.get(user=alice).stripe_customer_id == customer
    assert not LedgerEntry.objects.exists(), "nothing is credited before Stripe says the payment succeeded"


@pytest.mark.parametrize("amount", ["4.99", "5000.01", "10.001", "-20", "abc", "NaN", ""])
def test_a_topup_out_of_bounds_is_a_400_with_a_stable_code(api, amount):
    response = api.post("/api/billing/topups", {"amount_usd": amount}, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] in {"billing:invalid-amount", "invalid-request"}
    if amount:
        assert response.json()["error"]["code"] == "billing:invalid-amount"
        assert response.json()["error"]["detail"]["min_usd"] == "5"


def test_a_topup_needs_a_login(db):
    response = APIClient().post("/api/billing/topups", {"amount_usd": "20"}, format="json")
    assert response.status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN)
    assert response.json()["error"]["code"].startswith("auth:")


def test_stripe_unreachable_is_a_502_with_a_stable_code(api, settings):
    settings.STRIPE_API_HOST = "http://127.0.0.1:9"  # nothing listens on the discard port
    response = api.post("/api/billing/topups", {"amount_usd": "20"}, format="json")
    assert response.status_code == HTTPStatus.BAD_GATEWAY
    assert response.json()["error"]["code"] == "billing:payment-provider-error"


@pytest.mark.django_db(transaction=True)
def test_a_paid_topup_is_credited_by_the_webhook_localstripe_sends(live_server, alice, webhook_endpoint, localstripe):
    """End to end: PaymentIntent at localstripe, card confirmed, localstripe delivers the
    signed `payment_intent.succeeded` to our live server, the balance is credited once."""
    hook = urllib.request.Request(  # noqa: S310 (loopback localstripe)
        f"{localstripe}/_config/webhooks/billing-tests",
        data=urllib.parse.urlencode(
            {
                "url": live_server.url + webhook_path(webhook_endpoint),
                "secret": WEBHOOK_SECRET,
                "events[]": "payment_intent.succeeded",
            }
        ).encode(),
    )
    urllib.request.urlopen(hook, timeout=10).close()  # noqa: S310 (loopback localstripe)
    api = APIClient()
    api.force_authenticate(alice)
    intent = api.post("/api/billing/topups", {"amount_usd": "42.50"}, format="json").json()
    confirmed = billing_stripe.payment_intent_confirm(payment_intent_id=intent["id"], payment_method="pm_card_visa")
    assert confirmed.status == "succeeded"
    deadline = time.monotonic() + 20
    while not LedgerEntry.objects.filter(user=alice).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    entry = LedgerEntry.objects.get(user=alice)
    assert entry.idempotency_key == f"topup:{intent['id']}"
    assert entry.amount_usd == Decimal("42.50")


def test_an_operator_refunds_a_topup_at_stripe_and_it_is_debited_once(
    client, olga, alice, webhook_endpoint, localstripe
):
    from billing import services

    intent = services.topup_create(user=alice, amount_usd="30.00")
    assert billing_stripe.payment_intent_confirm(payment_intent_id=intent.id, payment_method="pm_card_visa").status == (
        "succeeded"
    )
    paid = event_payload(
        "payment_intent.succeeded", payment_intent(pi_id=intent.id, user_id=alice.pk, amount_cents=3000)
    )
    post_webhook(client, webhook_endpoint, paid, sign(paid))
    topup = LedgerEntry.objects.get(user=alice, kind="topup")

    client.force_login(olga)
    response = client.post(
        "/admin/billing/ledgerentry/", {"action": "refund_topups", "_selected_action": [str(topup.pk)]}
    )
    assert response.status_code == HTTPStatus.FOUND
    refund = LedgerEntry.objects.get(user=alice, kind="refund")
    assert refund.amount_usd == Decimal("-30.00")
    assert refund.operator == olga
    assert refund.stripe_id.startswith("re_")
    assert selectors.balance_get(user=alice) == 0

    # Stripe's own report of the same refund debits nothing more.
    client.logout()
    reported = _refund_event(charge_id="ch_x", pi_id=intent.id, refunds=[(refund.stripe_id, 3000)])
    assert post_webhook(client, webhook_endpoint, reported, sign(reported)).status_code == HTTPStatus.OK
    assert LedgerEntry.objects.filter(user=alice, kind="refund").count() == 1
    # A second refund of the same top-up is refused by Stripe and changes nothing.
    client.force_login(olga)
    client.post("/admin/billing/ledgerentry/", {"action": "refund_topups", "_selected_action": [str(topup.pk)]})
    assert selectors.balance_get(user=alice) == 0
