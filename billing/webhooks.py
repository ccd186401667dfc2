"""Stripe webhook handling, called by dj-stripe after it verified the signature.

dj-stripe's view checks `Stripe-Signature` against the WebhookEndpoint row's secret
(400 and nothing processed when it fails), stores a WebhookEventTrigger and, for a
valid one, sends `djstripe.signals.webhook_pre_process` inside its transaction
(billing.apps connects `webhook_pre_process` here; the DJSTRIPE_WEBHOOK_EVENT_CALLBACK
setting this used to hang on is deprecated and fails `check --deploy`). We handle the
payload here, then record the Event row ourselves: dj-stripe's own processing skips an
event it already has, so its object sync, which would call back to Stripe for every
event, never runs. Credits and debits are keyed by the PaymentIntent / Refund / Dispute
id, so duplicate and out-of-order deliveries post nothing more.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model

from billing import services
from billing.models import BillingAccount, LedgerEntry

logger = logging.getLogger("billing.webhooks")


def webhook_pre_process(sender: Any, instance: Any, **kwargs: Any) -> None:
    """dj-stripe's signal for a trigger whose signature verified: handle it, then record it."""
    webhook_event_callback(instance)
    _event_record(instance.json_body)


def _event_record(event: dict) -> None:
    from djstripe.models import Event

    if not event.get("id"):
        return
    Event.objects.get_or_create(
        id=event["id"],
        defaults={
            "type": event.get("type", ""),
            "data": event.get("data") or {},
            "api_version": event.get("api_version") or "",
            "livemode": bool(event.get("livemode")),
        },
    )


def webhook_event_callback(trigger: Any, api_key: str | None = None) -> None:
    event = trigger.json_body
    kind = event.get("type", "")
    obj = (event.get("data") or {}).get("object") or {}
    if kind == "payment_intent.succeeded":
        _payment_succeeded(obj)
    elif kind == "charge.refunded":
        for refund in (obj.get("refunds") or {}).get("data") or []:
            _refunded({**refund, "payment_intent": refund.get("payment_intent") or obj.get("payment_intent")}, obj)
    elif kind in ("refund.created", "charge.refund.updated", "refund.updated", "refund.failed"):
        _refunded(obj, obj)
    elif kind in ("charge.dispute.created", "charge.dispute.funds_withdrawn"):
        _dispute_opened(obj)
    elif kind == "charge.dispute.closed":
        _dispute_closed(obj)
    else:
        logger.info("stripe event %s ignored", kind)
    trigger.processed = True


def _cents(value: Any) -> Decimal:
    return Decimal(int(value)) / 100


def _user_id(obj: dict, *, payment_intent_id: str = "") -> int | None:
    """Who a Stripe object belongs to: the top-up already credited, our metadata, or the customer."""
    if payment_intent_id:
        owner = LedgerEntry.objects.filter(idempotency_key=f"topup:{payment_intent_id}").values("user_id").first()
        if owner:
            return owner["user_id"]
    user_id = (obj.get("metadata") or {}).get("user_id")
    if user_id and str(user_id).isdigit() and get_user_model().objects.filter(pk=int(user_id)).exists():
        return int(user_id)
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    if customer:
        account = BillingAccount.objects.filter(stripe_customer_id=customer).values("user_id").first()
        if account:
            return account["user_id"]
    return None


def _payment_succeeded(intent: dict) -> None:
    if str(intent.get("currency", "")).lower() != "usd":
        logger.warning("payment %s in %s ignored: only USD top-ups", intent.get("id"), intent.get("currency"))
        return
    user_id = _user_id(intent)
    if user_id is None:
        logger.warning("payment %s belongs to no user; not credited", intent.get("id"))
        return
    amount = intent.get("amount_received") or intent.get("amount") or 0
    entry = services.topup_credit(user_id=user_id, payment_intent_id=intent["id"], amount_usd=_cents(amount))
    logger.info("payment %s %s", intent["id"], "credited" if entry else "already credited")


# A refund is debited as soon as Stripe reports it (pending included: the money is on
# its way out) and credited back if Stripe later reports that it failed or was canceled.
_REFUND_DEBITED = (None, "succeeded", "pending")
_REFUND_REVERSED = ("failed", "canceled")


def _refunded(refund: dict, source: dict) -> None:
    status = refund.get("status")
    if status in _REFUND_REVERSED:
        entry = services.refund_reverse(refund_id=refund["id"])
        logger.info("refund %s %s: %s", refund["id"], status, "credited back" if entry else "nothing to reverse")
        return
    if status not in _REFUND_DEBITED:
        return
    payment_intent_id = refund.get("payment_intent") or ""
    if isinstance(payment_intent_id, dict):
        payment_intent_id = payment_intent_id.get("id", "")
    user_id = _user_id(source, payment_intent_id=payment_intent_id)
    if user_id is None:
        logger.warning("refund %s belongs to no user; not debited", refund.get("id"))
        return
    services.refund_debit(
        user_id=user_id,
        refund_id=refund["id"],
        amount_usd=_cents(refund.get("amount") or 0),
        payment_intent_id=payment_intent_id,
    )


def _id(value: Any) -> str:
    # Stripe sends a related object as its id, or expanded as a dict.
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _dispute_debited(dispute: dict) -> LedgerEntry | None:
    """Debit the disputed amount once; None when it was already debited, has no owner or is
    an inquiry (`warning_*`: Stripe withdraws nothing unless it becomes a chargeback, which
    `charge.dispute.funds_withdrawn` reports)."""
    if str(dispute.get("status", "")).startswith("warning_"):
        logger.info("inquiry %s: nothing withdrawn, not debited", dispute.get("id"))
        return None
    payment_intent_id = _id(dispute.get("payment_intent"))
    user_id = _user_id(dispute, payment_intent_id=payment_intent_id)
    if user_id is None:
        logger.warning("dispute %s belongs to no user; not debited", dispute.get("id"))
        return None
    return services.dispute_debit(
        user_id=user_id,
        dispute_id=dispute["id"],
        amount_usd=_cents(dispute.get("amount") or 0),
        payment_intent_id=payment_intent_id,
    )


def _dispute_opened(dispute: dict) -> None:
    """A chargeback: the money behind the balance went back to the card. Debit it and stop
    the account's running instances (data kept), once: a duplicate delivery, or one after
    the dispute was already closed, posts and stops nothing more."""
    if LedgerEntry.objects.filter(idempotency_key=f"dispute-reversal:{dispute['id']}").exists():
        return
    entry = _dispute_debited(dispute)
    logger.info("dispute %s %s", dispute["id"], "debited" if entry else "already debited or unowned")
    if entry is not None:
        services.account_instances_stop(user_id=entry.user_id, reason=f"payment disputed ({dispute['id']})")


def _dispute_closed(dispute: dict) -> None:
    """`won`: the money came back, credit the debit back once; `lost` (or any other end):
    the debit stays. Either way the debit is posted first if `created` never arrived, so
    the ledger shows both sides and a late `created` posts nothing."""
    entry = _dispute_debited(dispute)
    if entry is not None:
        logger.info("dispute %s debited at its close (created never seen)", dispute["id"])
    if dispute.get("status") == "won":
        reversal = services.dispute_reverse(dispute_id=dispute["id"])
        logger.info("dispute %s won: %s", dispute["id"], "credited back" if reversal else "nothing to credit back")
