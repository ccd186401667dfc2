"""Top-ups through Stripe: the PaymentIntent, the card step of the page, and refunds.

Stripe is called only outside transactions (billing.stripe); the ledger is credited by
the `payment_intent.succeeded` webhook (billing.webhooks), never here.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db.models import Sum

from billing import stripe
from billing.errors import InvalidAdjustment, InvalidTopupAmount, PaymentProviderError, TopupNotFound
from billing.models import BillingAccount, LedgerEntry
from billing.services.ledger import account_get_or_create, money, refund_debit


def topup_create(*, user: Any, amount_usd: Decimal | str) -> stripe.PaymentIntentInfo:
    """Create a Stripe PaymentIntent for a top-up the user chose; credited by the webhook.

    Creates the user's Stripe customer on first use. Raises InvalidTopupAmount outside
    GPUCLOUD_TOPUP_MIN_USD..MAX_USD or with fractions of a cent, PaymentProviderError
    when Stripe fails. Calls Stripe outside any transaction.
    """
    low, high = settings.GPUCLOUD_TOPUP_MIN_USD, settings.GPUCLOUD_TOPUP_MAX_USD
    bounds = {"min_usd": str(low), "max_usd": str(high)}
    try:
        amount = Decimal(str(amount_usd))
    except InvalidOperation as exc:
        raise InvalidTopupAmount(detail={**bounds, "amount_usd": str(amount_usd)}) from exc
    if not amount.is_finite() or amount != money(amount) or not low <= amount <= high:
        raise InvalidTopupAmount(
            f"A top-up must be between ${low} and ${high}, in whole cents.",
            detail={**bounds, "amount_usd": str(amount)},
        )
    account = account_get_or_create(user=user)
    if not account.stripe_customer_id:
        customer_id = stripe.customer_create(email=user.email, user_id=user.pk)
        # Two racing first top-ups may both create a customer: the first stored wins and
        # the other stays unused at Stripe (harmless); both PaymentIntents credit this user.
        BillingAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer_id)
        account.refresh_from_db(fields=["stripe_customer_id"])
    return stripe.payment_intent_create(
        customer_id=account.stripe_customer_id, amount_cents=int(amount * 100), user_id=user.pk
    )


def topup_card_setup(*, user: Any) -> str:
    """A SetupIntent client secret for the page's card form (the customer exists by now).

    Raises PaymentProviderError before the user's first top-up or when Stripe fails.
    """
    account = account_get_or_create(user=user)
    if not account.stripe_customer_id:
        raise PaymentProviderError(detail={"reason": "no Stripe customer yet"})
    return stripe.setup_intent_create(customer_id=account.stripe_customer_id)


def topup_pay(*, user: Any, payment_intent_id: str, payment_method: str) -> stripe.PaymentIntentInfo:
    """Attach the saved card to the user's own top-up and confirm it at Stripe.

    The ledger is credited by the `payment_intent.succeeded` webhook, not here. Raises
    TopupNotFound for a PaymentIntent that is not this user's top-up.
    """
    if not payment_intent_id.startswith("pi_") or not payment_method.startswith("pm_"):
        raise TopupNotFound()
    if stripe.payment_intent_owner(payment_intent_id=payment_intent_id) != str(user.pk):
        raise TopupNotFound()
    return stripe.payment_intent_confirm(payment_intent_id=payment_intent_id, payment_method=payment_method)


def topup_refund(*, entry: LedgerEntry, operator: Any) -> LedgerEntry | None:
    """Refund what is left of a top-up at Stripe and debit it now, keyed by the Refund id,
    so Stripe's later `charge.refunded` webhook debits nothing more.

    Raises InvalidAdjustment for an entry that is not a Stripe top-up or is refunded
    already, PaymentProviderError when Stripe refuses. Calls Stripe outside any transaction.
    """
    if entry.kind != LedgerEntry.Kind.TOPUP or not entry.stripe_id:
        raise InvalidAdjustment("Only Stripe top-ups can be refunded.", detail={"entry": entry.pk})
    # Refund entries net out: a reversed (failed) refund's credit makes its amount refundable again.
    refunded = -(
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND, payment_intent_id=entry.stripe_id).aggregate(
            total=Sum("amount_usd")
        )["total"]
        or Decimal(0)
    )
    left = money(entry.amount_usd - refunded)
    if left <= 0:
        raise InvalidAdjustment("This top-up is already refunded.", detail={"payment_intent": entry.stripe_id})
    refund_id = stripe.refund_create(payment_intent_id=entry.stripe_id, amount_cents=int(left * 100))
    return refund_debit(
        user_id=entry.user_id,
        refund_id=refund_id,
        amount_usd=left,
        payment_intent_id=entry.stripe_id,
        operator=operator,
    )
