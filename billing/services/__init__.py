"""Writes of billing, one module per concern (`from billing.services import ...`).

- ledger: every movement of money, once per idempotency key, with the cached balance;
  operator adjustments, top-up credits, refund and dispute debits and their reversals;
- metering: usage segments from the lifecycle's facts, billed to the ledger;
- topups: Stripe PaymentIntents, the card step and refunds (Stripe outside transactions);
- prices: GPU rates and their history; enforcement: stops at zero (and on a dispute) and
  low-balance email;
- limits: the customer's own daily and monthly spend caps;
- fault_credits: a GPU segment cut short by a GPU fault is credited from the fault on.
"""

from __future__ import annotations

from billing.services.enforcement import (
    EnforceResult,
    account_instances_stop,
    balances_enforce,
    low_balance_notify,
)
from billing.services.fault_credits import fault_credit_amount, gpu_fault_credits_post
from billing.services.ledger import (
    account_get_or_create,
    balance_adjust,
    dispute_debit,
    dispute_reverse,
    ledger_post,
    money,
    refund_debit,
    refund_reverse,
    topup_credit,
)
from billing.services.limits import spend_caps_set
from billing.services.metering import METER_LOCK_KEY, MeterResult, meter_run
from billing.services.prices import gpu_rate_record, gpu_type_rate_set
from billing.services.topups import topup_card_setup, topup_create, topup_pay, topup_refund

__all__ = [
    "METER_LOCK_KEY",
    "EnforceResult",
    "MeterResult",
    "account_get_or_create",
    "account_instances_stop",
    "balance_adjust",
    "balances_enforce",
    "dispute_debit",
    "dispute_reverse",
    "fault_credit_amount",
    "gpu_fault_credits_post",
    "gpu_rate_record",
    "gpu_type_rate_set",
    "ledger_post",
    "low_balance_notify",
    "meter_run",
    "money",
    "refund_debit",
    "refund_reverse",
    "spend_caps_set",
    "topup_card_setup",
    "topup_create",
    "topup_credit",
    "topup_pay",
    "topup_refund",
]
