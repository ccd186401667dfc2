"""The ledger: every movement of money is one entry keyed by a unique idempotency key,
posted in the same transaction as the user's cached balance (BillingAccount.balance_usd).

A retry, a duplicate webhook or a second report of the same refund therefore posts
nothing twice.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.errors import InvalidAdjustment
from billing.models import BillingAccount, LedgerEntry
from instances.notify.models import Event
from instances.notify.services import notify

logger = logging.getLogger("billing")

CENT = Decimal("0.01")


def money(value: Decimal | str | int) -> Decimal:
    """Round to the cent, half up (the one rounding rule of billing)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def _account_upsert_sql() -> str:
    # Billing's own table; ON CONFLICT is understood by PostgreSQL and SQLite alike.
    table = BillingAccount._meta.db_table
    return f"""
INSERT INTO {table} (user_id, balance_usd, stripe_customer_id, created_at)
VALUES (%s, %s, '', %s)
ON CONFLICT (user_id) DO UPDATE SET balance_usd = {table}.balance_usd + EXCLUDED.balance_usd
"""  # noqa: S608 (table name from the model, values bound)


def ledger_post(
    *,
    user_id: int,
    kind: str,
    amount_usd: Decimal,
    idempotency_key: str,
    at: datetime | None = None,
    stripe_id: str = "",
    payment_intent_id: str = "",
    operator: Any = None,
    reason: str = "",
) -> LedgerEntry | None:
    """Append one ledger entry and move the user's cached balance, once per key.

    Returns the entry, or None when the key was already posted (a duplicate delivery or
    a retry). A concurrent duplicate waits on the unique index until the first commits,
    then sees the conflict: exactly one of them credits.
    """
    with transaction.atomic():
        try:
            # A savepoint, so a duplicate leaves the caller's transaction usable.
            with transaction.atomic():
                entry = LedgerEntry.objects.create(
                    user_id=user_id,
                    kind=kind,
                    amount_usd=amount_usd,
                    idempotency_key=idempotency_key,
                    at=at or timezone.now(),
                    stripe_id=stripe_id,
                    payment_intent_id=payment_intent_id,
                    operator=operator,
                    reason=reason,
                )
        except IntegrityError:
            if LedgerEntry.objects.filter(idempotency_key=idempotency_key).exists():
                return None
            raise
        with connection.cursor() as cur:
            cur.execute(_account_upsert_sql(), [user_id, amount_usd, timezone.now()])
    return entry


def account_get_or_create(*, user: Any) -> BillingAccount:
    account, _ = BillingAccount.objects.get_or_create(user=user)
    return account


def topup_credit(*, user_id: int, payment_intent_id: str, amount_usd: Decimal) -> LedgerEntry | None:
    """Credit a succeeded top-up once, keyed by its PaymentIntent id; the first credit
    notifies the customer (top-up received)."""
    entry = ledger_post(
        user_id=user_id,
        kind=LedgerEntry.Kind.TOPUP,
        amount_usd=money(amount_usd),
        idempotency_key=f"topup:{payment_intent_id}",
        stripe_id=payment_intent_id,
        payment_intent_id=payment_intent_id,
        reason="Stripe top-up",
    )
    if entry is not None:
        notify(user=entry.user, event=Event.TOPUP_RECEIVED, data={"amount_usd": str(money(amount_usd))})
    return entry


def refund_debit(
    *, user_id: int, refund_id: str, amount_usd: Decimal, payment_intent_id: str = "", operator: Any = None
) -> LedgerEntry | None:
    """Debit a refund once, keyed by its Stripe Refund id (the webhook and the operator's
    refund action may both report it)."""
    return ledger_post(
        user_id=user_id,
        kind=LedgerEntry.Kind.REFUND,
        amount_usd=-money(amount_usd),
        idempotency_key=f"refund:{refund_id}",
        stripe_id=refund_id,
        payment_intent_id=payment_intent_id,
        operator=operator,
        reason=f"Refund of {payment_intent_id}" if payment_intent_id else "Refund",
    )


def refund_reverse(*, refund_id: str) -> LedgerEntry | None:
    """Credit back a refund Stripe reports `failed` or `canceled`, once, if it was debited.

    A refund is debited while still `pending` (the money is on its way out); when it
    later fails, the money stays with us and the customer's balance gets it back under
    its own key, `refund-reversal:<refund id>`. Returns the credit, or None when the
    refund was never debited or its reversal is already posted.
    """
    return _debit_reverse(
        debit_key=f"refund:{refund_id}",
        reversal_key=f"refund-reversal:{refund_id}",
        reason=f"Refund {refund_id} failed at Stripe",
    )


def _debit_reverse(*, debit_key: str, reversal_key: str, reason: str) -> LedgerEntry | None:
    """Post the opposite of the entry keyed `debit_key`, once under `reversal_key`, with its
    kind, user and Stripe ids; None when there is no such entry or it is already reversed."""
    debit = LedgerEntry.objects.filter(idempotency_key=debit_key).first()
    if debit is None:
        return None
    return ledger_post(
        user_id=debit.user_id,
        kind=debit.kind,
        amount_usd=-debit.amount_usd,
        idempotency_key=reversal_key,
        stripe_id=debit.stripe_id,
        payment_intent_id=debit.payment_intent_id,
        reason=reason,
    )


def dispute_debit(
    *, user_id: int, dispute_id: str, amount_usd: Decimal, payment_intent_id: str = ""
) -> LedgerEntry | None:
    """Debit a disputed (charged back) payment once, keyed `dispute:<dispute id>`.

    The card's owner took the money back through their bank: the credit it bought must
    not stay spendable. Returns the debit, or None when it was already posted.
    """
    return ledger_post(
        user_id=user_id,
        kind=LedgerEntry.Kind.DISPUTE,
        amount_usd=-money(amount_usd),
        idempotency_key=f"dispute:{dispute_id}",
        stripe_id=dispute_id,
        payment_intent_id=payment_intent_id,
        reason=f"Dispute {dispute_id} of {payment_intent_id}" if payment_intent_id else f"Dispute {dispute_id}",
    )


def dispute_reverse(*, dispute_id: str) -> LedgerEntry | None:
    """Credit back a dispute we won, once (`dispute-reversal:<dispute id>`), if it was debited.

    Returns the credit, or None when the dispute was never debited or its reversal is
    already posted.
    """
    return _debit_reverse(
        debit_key=f"dispute:{dispute_id}",
        reversal_key=f"dispute-reversal:{dispute_id}",
        reason=f"Dispute {dispute_id} won",
    )


def balance_adjust(*, user: Any, amount_usd: Decimal | str, reason: str, operator: Any) -> LedgerEntry:
    """Credit (positive) or debit (negative) a user by an operator's hand, with a reason.

    Raises InvalidAdjustment for a zero or malformed amount or an empty reason.
    """
    try:
        amount = Decimal(str(amount_usd))
    except InvalidOperation as exc:
        raise InvalidAdjustment(detail={"amount_usd": str(amount_usd)}) from exc
    if not amount.is_finite() or amount == 0 or amount != money(amount) or not reason.strip():
        raise InvalidAdjustment(detail={"amount_usd": str(amount_usd)})
    entry = ledger_post(
        user_id=user.pk,
        kind=LedgerEntry.Kind.ADJUSTMENT,
        amount_usd=amount,
        idempotency_key=f"adjust:{uuid.uuid4()}",
        operator=operator,
        reason=reason.strip(),
    )
    if entry is None:  # a fresh uuid key cannot collide; never pass silently if it did
        raise InvalidAdjustment(detail={"reason": "duplicate key"})
    logger.info("balance adjusted user=%s amount=%s by=%s", user.pk, amount, getattr(operator, "pk", None))
    return entry
