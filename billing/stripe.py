"""The only module that talks to Stripe: a small wrapper over the Stripe SDK.

Callers get plain values and `PaymentProviderError`, never the SDK's objects or
exceptions. The client is built per call from settings, so the API host (localstripe
in tests) and keys are read when used, not frozen at import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import stripe as stripe_sdk
from django.conf import settings

from billing.errors import PaymentProviderError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaymentIntentInfo:
    id: str
    client_secret: str
    amount_cents: int
    currency: str
    status: str


def _secret_key() -> str:
    return settings.STRIPE_LIVE_SECRET_KEY if settings.STRIPE_LIVE_MODE else settings.STRIPE_TEST_SECRET_KEY


def _client() -> stripe_sdk.StripeClient:
    kwargs: dict = {"max_network_retries": 1}
    api_host = getattr(settings, "STRIPE_API_HOST", "")  # localstripe in tests; unset in production
    if api_host:
        kwargs["base_addresses"] = {"api": api_host}
    return stripe_sdk.StripeClient(_secret_key(), **kwargs)


def _fail(action: str, exc: stripe_sdk.StripeError) -> PaymentProviderError:
    # The SDK's message is safe to log (no keys); the raw request is not.
    logger.warning("stripe %s failed: %s %s", action, type(exc).__name__, exc.user_message or exc.code or "")
    return PaymentProviderError(detail={"provider_code": exc.code or type(exc).__name__})


def customer_create(*, email: str, user_id: int) -> str:
    """Create a Stripe customer for a user and return its id."""
    try:
        customer = _client().v1.customers.create(params={"email": email, "metadata": {"user_id": str(user_id)}})
    except stripe_sdk.StripeError as exc:
        raise _fail("customer_create", exc) from exc
    return customer.id


def payment_intent_create(*, customer_id: str, amount_cents: int, user_id: int) -> PaymentIntentInfo:
    """Create a USD PaymentIntent for a top-up; the page confirms it with Stripe.js."""
    try:
        intent = _client().v1.payment_intents.create(
            params={
                "amount": amount_cents,
                "currency": "usd",
                "customer": customer_id,
                "payment_method_types": ["card"],
                "metadata": {"user_id": str(user_id), "purpose": "topup"},
            }
        )
    except stripe_sdk.StripeError as exc:
        raise _fail("payment_intent_create", exc) from exc
    return _info(intent)


def payment_intent_confirm(*, payment_intent_id: str, payment_method: str) -> PaymentIntentInfo:
    """Attach a payment method and confirm (what Stripe.js does on the page; used by tests and tools)."""
    client = _client()
    try:
        client.v1.payment_intents.update(payment_intent_id, params={"payment_method": payment_method})
        intent = client.v1.payment_intents.confirm(payment_intent_id)
    except stripe_sdk.StripeError as exc:
        raise _fail("payment_intent_confirm", exc) from exc
    return _info(intent)


def refund_create(*, payment_intent_id: str, amount_cents: int | None = None) -> str:
    """Refund a top-up (in full or in part); the ledger is debited when Stripe reports it."""
    params: Any = {"payment_intent": payment_intent_id}
    if amount_cents is not None:
        params["amount"] = amount_cents
    try:
        refund = _client().v1.refunds.create(params=params)
    except stripe_sdk.StripeError as exc:
        raise _fail("refund_create", exc) from exc
    return refund.id


def _info(intent) -> PaymentIntentInfo:
    return PaymentIntentInfo(
        id=intent.id,
        client_secret=intent.client_secret,
        amount_cents=int(intent.amount),
        currency=intent.currency,
        status=intent.status,
    )


# ---- the card step of the top-up page ------------------------------------------------
# The page saves the card with a SetupIntent (Stripe.js confirmCardSetup), then the
# server attaches it to the top-up's PaymentIntent and confirms; a card that needs 3-D
# Secure comes back `requires_action` and the page finishes it with confirmCardPayment.


def setup_intent_create(*, customer_id: str) -> str:
    """A SetupIntent for the customer's card; returns its client secret."""
    try:
        intent = _client().v1.setup_intents.create(params={"customer": customer_id, "payment_method_types": ["card"]})
    except stripe_sdk.StripeError as exc:
        raise _fail("setup_intent_create", exc) from exc
    return intent.client_secret or ""


def payment_intent_owner(*, payment_intent_id: str) -> str:
    """The user id a top-up PaymentIntent was made for (its metadata), "" when none."""
    try:
        intent = _client().v1.payment_intents.retrieve(payment_intent_id)
    except stripe_sdk.StripeError as exc:
        raise _fail("payment_intent_retrieve", exc) from exc
    metadata = intent.metadata.to_dict() if intent.metadata else {}
    return str(metadata.get("user_id", "")) if metadata.get("purpose") == "topup" else ""
