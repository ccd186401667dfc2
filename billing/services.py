"""Billing writes: metering, the ledger, top-ups and refunds, operator adjustments,
enforcement and low-balance email.

Every movement of money goes through one ledger insert keyed by a unique idempotency
key, in the same transaction as the cached balance (and, for usage, the segment's
watermark). A retry, a duplicate webhook or an overlapping meter run therefore posts
nothing twice. Stripe is called only outside transactions (billing.stripe).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import stripe
from billing.errors import InvalidAdjustment, InvalidTopupAmount, PaymentProviderError, TopupNotFound
from billing.models import (
    GPU_MINIMUM_SECONDS,
    SECONDS_PER_HOUR,
    SECONDS_PER_MONTH,
    BillingAccount,
    GpuRate,
    LedgerEntry,
    UsageRecord,
)
from gpucloud.errors import DomainError
from instances import cache as apicache
from instances.models import Gpu, GpuType, Instance, InstanceEvent
from instances.services import instance_stop

logger = logging.getLogger("billing")

CENT = Decimal("0.01")
FINE = Decimal("1e-12")
# pg advisory lock key of the meter run ("gpme"): one run at a time across all workers.
METER_LOCK_KEY = 0x6770_6D65
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def money(value: Decimal | str | int) -> Decimal:
    """Round to the cent, half up (the one rounding rule of billing)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def segment_cost(*, rate_usd: Decimal, seconds: int, minimum_seconds: int, period_seconds: int) -> Decimal:
    """What a closed segment costs: rate * max(minimum, seconds) / period, to the cent."""
    return money(Decimal(rate_usd) * max(minimum_seconds, seconds) / period_seconds)


# ---- the ledger ----------------------------------------------------------------------

_ACCOUNT_UPSERT = """
INSERT INTO billing_billingaccount (user_id, balance_usd, stripe_customer_id, created_at)
VALUES (%s, %s, '', %s)
ON CONFLICT (user_id) DO UPDATE SET balance_usd = billing_billingaccount.balance_usd + EXCLUDED.balance_usd
"""


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
            cur.execute(_ACCOUNT_UPSERT, [user_id, amount_usd, timezone.now()])
    return entry


def account_get_or_create(*, user: Any) -> BillingAccount:
    account, _ = BillingAccount.objects.get_or_create(user=user)
    return account


def topup_credit(*, user_id: int, payment_intent_id: str, amount_usd: Decimal) -> LedgerEntry | None:
    """Credit a succeeded top-up once, keyed by its PaymentIntent id."""
    return ledger_post(
        user_id=user_id,
        kind=LedgerEntry.Kind.TOPUP,
        amount_usd=money(amount_usd),
        idempotency_key=f"topup:{payment_intent_id}",
        stripe_id=payment_intent_id,
        payment_intent_id=payment_intent_id,
        reason="Stripe top-up",
    )


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


def topup_refund(*, entry: LedgerEntry, operator: Any) -> LedgerEntry | None:
    """Refund a top-up in full at Stripe and debit it now, keyed by the Refund id, so
    Stripe's later `charge.refunded` webhook debits nothing more.

    Raises InvalidAdjustment for an entry that is not a Stripe top-up, PaymentProviderError
    when Stripe refuses (already refunded, for one). Calls Stripe outside any transaction.
    """
    if entry.kind != LedgerEntry.Kind.TOPUP or not entry.stripe_id:
        raise InvalidAdjustment("Only Stripe top-ups can be refunded.", detail={"entry": entry.pk})
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


# ---- top-ups (Stripe) ----------------------------------------------------------------


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


# ---- prices --------------------------------------------------------------------------


def gpu_rate_record(*, gpu_type: GpuType, old_rate: Decimal, new_rate: Decimal, now: datetime) -> None:
    """Keep the price history so a segment is priced at the rate in force when it opened."""
    if not GpuRate.objects.filter(gpu_type=gpu_type).exists():
        GpuRate.objects.create(gpu_type=gpu_type, rate_per_hour=old_rate, effective_at=EPOCH)
    GpuRate.objects.create(gpu_type=gpu_type, rate_per_hour=new_rate, effective_at=now)


def gpu_type_rate_set(*, gpu_type: GpuType, rate_per_hour: Decimal, now: datetime | None = None) -> GpuType:
    """Change a GPU type's hourly rate from `now` on; open segments keep their rate."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = GpuType.objects.select_for_update().get(pk=gpu_type.pk)
        if locked.rate_per_hour != rate_per_hour:
            gpu_rate_record(gpu_type=locked, old_rate=locked.rate_per_hour, new_rate=rate_per_hour, now=now)
            # update(), not save(): the pre_save receiver would record the change again.
            GpuType.objects.filter(pk=locked.pk).update(rate_per_hour=rate_per_hour)
            apicache.catalog_changed()  # the API shows rates; an update() sends no signal
    gpu_type.refresh_from_db(fields=["rate_per_hour"])
    return gpu_type


# ---- metering ------------------------------------------------------------------------


@dataclass
class MeterResult:
    ran: bool
    opened: int = 0
    closed: int = 0
    billed: int = 0
    entries: int = 0


# Opens a GPU segment per `started` event and a storage segment per `ended` event.
# The GPU rate is the one in force at the event, a change at that very instant included
# (price history, else the current
# rate); storage is storage_gb * $/GB-month over a 30-day month.
_OPEN_SQL = """
INSERT INTO billing_usagerecord (
    kind, instance_id, user_id, gpu_type_id, gpu_name, storage_gb, start_event_id, started_at,
    rate_usd, rate_period_seconds, minimum_seconds, billed_until, billed_usd, created_at)
SELECT
    CASE WHEN e.kind = 'started' THEN 'gpu' ELSE 'storage' END,
    e.instance_id,
    i.owner_id,
    CASE WHEN e.kind = 'started' THEN i.gpu_type_id END,
    CASE WHEN e.kind = 'started' THEN COALESCE(g.name, t.display_name) ELSE '' END,
    CASE WHEN e.kind = 'ended' THEN i.storage_gb END,
    e.id,
    e.at,
    CASE WHEN e.kind = 'started' THEN COALESCE(
        (SELECT r.rate_per_hour FROM billing_gpurate r
          WHERE r.gpu_type_id = i.gpu_type_id AND r.effective_at <= e.at
          ORDER BY r.effective_at DESC, r.id DESC LIMIT 1),
        t.rate_per_hour)
    ELSE i.storage_gb * %(storage_rate)s END,
    CASE WHEN e.kind = 'started' THEN %(hour)s ELSE %(month)s END,
    CASE WHEN e.kind = 'started' THEN %(minimum)s ELSE 0 END,
    e.at,
    0,
    %(now)s
FROM instances_instanceevent e
JOIN instances_instance i ON i.id = e.instance_id
JOIN instances_gputype t ON t.id = i.gpu_type_id
-- The GPU the segment ran on, as the worker recorded it (the instance may hold another now).
LEFT JOIN instances_gpu g ON g.uuid = e.data->>'gpu' AND e.kind = 'started'
WHERE e.kind IN ('started', 'ended') AND e.at <= %(now)s
  AND e.id > COALESCE(
      (SELECT m.event_id_max FROM billing_metermark m
        WHERE m.at <= %(now)s - %(mark_lag)s * INTERVAL '1 second' ORDER BY m.at DESC LIMIT 1), 0)
  AND NOT EXISTS (SELECT 1 FROM billing_usagerecord u WHERE u.start_event_id = e.id)
ON CONFLICT (start_event_id) DO NOTHING
"""

# A GPU segment ends at the next `ended` event of its instance (exactly one per
# `started`, at the container's real finish time); a storage segment at the next
# `started` or at termination.
_CLOSE_SQL = """
UPDATE billing_usagerecord u
   SET end_event_id = c.event_id, ended_at = GREATEST(c.at, u.started_at)
  FROM billing_usagerecord o
  JOIN LATERAL (
    SELECT e.id AS event_id, e.at
      FROM instances_instanceevent e
     WHERE e.instance_id = o.instance_id AND e.id + 0 > o.start_event_id
       -- Only the per-instance index may drive this (hence `+ 0` and the CASE): with a
       -- condition or ordering another index could serve (kind, at, the primary key),
       -- the planner was seen scanning every such event once per segment.
       AND CASE o.kind WHEN 'gpu' THEN e.kind = 'ended'
                       ELSE e.kind IN ('started', 'terminated', 'workspace-removed') END
     ORDER BY e.id + 0
     LIMIT 1
  ) c ON TRUE
 WHERE u.id = o.id AND o.closed_at IS NULL AND o.end_event_id IS NULL AND c.at <= %(now)s
"""

# Extends every open segment to now (whole seconds since its start), finalises ended
# ones at the rounded cost, and posts each difference to the ledger and the cached
# balance. One statement: the watermark, the entry and the balance move together.
_BILL_SQL = """
WITH calc AS (
    SELECT u.id, u.user_id, u.kind, u.billed_usd, u.rate_usd, u.rate_period_seconds, u.minimum_seconds,
           u.started_at, u.ended_at,
           FLOOR(GREATEST(0, EXTRACT(EPOCH FROM (COALESCE(u.ended_at, %(now)s) - u.started_at))))::bigint AS secs
      FROM billing_usagerecord u
     WHERE u.closed_at IS NULL
       FOR UPDATE
), priced AS (
    SELECT c.*,
           c.ended_at IS NOT NULL AS closing,
           COALESCE(c.ended_at, c.started_at + c.secs * INTERVAL '1 second') AS until,
           CASE WHEN c.ended_at IS NOT NULL
                THEN ROUND(c.rate_usd * GREATEST(c.minimum_seconds, c.secs) / c.rate_period_seconds, 2)
                ELSE ROUND(c.rate_usd * c.secs / c.rate_period_seconds, 12)
           END AS new_billed
      FROM calc c
), upd AS (
    UPDATE billing_usagerecord u
       SET billed_until = p.until,
           billed_usd = p.new_billed,
           duration_seconds = CASE WHEN p.closing THEN p.secs END,
           cost_usd = CASE WHEN p.closing THEN p.new_billed END,
           closed_at = CASE WHEN p.closing THEN %(now)s::timestamptz END
      FROM priced p
     WHERE u.id = p.id AND (p.closing OR p.until > u.billed_until)
 RETURNING u.id
), ins AS (
    INSERT INTO billing_ledgerentry (
        user_id, kind, amount_usd, idempotency_key, at, usage_id, stripe_id, payment_intent_id, reason)
    SELECT p.user_id,
           CASE WHEN p.kind = 'gpu' THEN 'gpu-usage' ELSE 'storage' END,
           p.billed_usd - p.new_billed,
           'usage:' || p.id || ':' || CASE WHEN p.closing THEN 'final'
               ELSE to_char(p.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END,
           %(now)s, p.id, '', '', ''
      FROM priced p JOIN upd ON upd.id = p.id
     WHERE p.new_billed <> p.billed_usd
 RETURNING user_id, amount_usd
), acc AS (
    INSERT INTO billing_billingaccount (user_id, balance_usd, stripe_customer_id, created_at)
    SELECT user_id, SUM(amount_usd), '', %(now)s FROM ins GROUP BY user_id
    ON CONFLICT (user_id) DO UPDATE SET balance_usd = billing_billingaccount.balance_usd + EXCLUDED.balance_usd
    RETURNING 1
)
SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM ins), (SELECT count(*) FROM priced WHERE closing)
"""


# Events at or below the mark of a run this much older are all billed (see MeterMark).
METER_MARK_LAG_SECONDS = 3600

_MARK_SQL = """
INSERT INTO billing_metermark (at, event_id_max)
SELECT %(now)s, COALESCE(MAX(id), 0) FROM instances_instanceevent
"""


def _no_interrupt(step: str) -> None:
    return None


def meter_run(*, now: datetime | None = None, interrupt: Callable[[str], None] | None = None) -> MeterResult:
    """Bill every usage segment up to `now`: open new ones from `started`/`ended` events,
    close ended ones, extend open ones, and post each increment to the ledger.

    One transaction of a constant number of statements whatever the number of segments,
    under a PostgreSQL advisory lock: an overlapping run returns `ran=False` at once; a
    repeated run posts nothing new; a run that dies half-way rolls back whole. Every
    ledger entry's key is `usage:<segment>:<watermark>` (or `:final`), unique.
    `interrupt(step)` is called between statements (tests crash a run with it).
    """
    now = now or timezone.now()
    interrupt = interrupt or _no_interrupt
    if connection.vendor != "postgresql":
        return _meter_run_portable(now=now, interrupt=interrupt)
    params = {
        "now": now,
        "storage_rate": settings.GPUCLOUD_STORAGE_RATE_PER_GB_MONTH,
        "hour": SECONDS_PER_HOUR,
        "month": SECONDS_PER_MONTH,
        "minimum": GPU_MINIMUM_SECONDS,
        "mark_lag": METER_MARK_LAG_SECONDS,
        "mark_keep": METER_MARK_LAG_SECONDS * 24,
    }
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [METER_LOCK_KEY])
        if not cur.fetchone()[0]:
            return MeterResult(ran=False)
        cur.execute(_OPEN_SQL, params)
        opened = cur.rowcount
        interrupt("opened")
        cur.execute(_CLOSE_SQL, params)
        interrupt("closed")
        cur.execute(_BILL_SQL, params)
        billed, entries, closed = cur.fetchone()
        interrupt("billed")
        cur.execute(_MARK_SQL, params)
        cur.execute("DELETE FROM billing_metermark WHERE at < %(now)s - %(mark_keep)s * INTERVAL '1 second'", params)
    return MeterResult(ran=True, opened=opened, closed=closed, billed=billed, entries=entries)


def _meter_run_portable(*, now: datetime, interrupt: Callable[[str], None]) -> MeterResult:
    """The same rules row by row, for the SQLite quick start (whose writers are serialised
    by its IMMEDIATE transactions, so no extra lock is needed). Not constant in queries."""
    result = MeterResult(ran=True)
    storage_rate = settings.GPUCLOUD_STORAGE_RATE_PER_GB_MONTH
    with transaction.atomic():
        fresh = (
            InstanceEvent.objects.filter(kind__in=["started", "ended"], at__lte=now, usage_record__isnull=True)
            .select_related("instance__gpu_type", "instance__gpu")
            .order_by("id")
        )
        for event in fresh:
            instance = event.instance
            gpu = event.kind == "started"
            if gpu:
                history = GpuRate.objects.filter(gpu_type_id=instance.gpu_type_id, effective_at__lte=event.at)
                price = history.order_by("-effective_at", "-id").first()
                rate = price.rate_per_hour if price else instance.gpu_type.rate_per_hour
            UsageRecord.objects.create(
                kind=UsageRecord.Kind.GPU if gpu else UsageRecord.Kind.STORAGE,
                instance=instance,
                user_id=instance.owner_id,
                gpu_type_id=instance.gpu_type_id if gpu else None,
                gpu_name=_gpu_name(event) if gpu else "",
                storage_gb=None if gpu else instance.storage_gb,
                start_event=event,
                started_at=event.at,
                rate_usd=rate if gpu else instance.storage_gb * storage_rate,
                rate_period_seconds=SECONDS_PER_HOUR if gpu else SECONDS_PER_MONTH,
                minimum_seconds=GPU_MINIMUM_SECONDS if gpu else 0,
                billed_until=event.at,
                created_at=now,
            )
            result.opened += 1
        interrupt("opened")
        for usage in UsageRecord.objects.filter(closed_at__isnull=True).select_for_update():
            if usage.end_event_id is None:
                kinds = ["ended"] if usage.kind == "gpu" else ["started", "terminated", "workspace-removed"]
                end = (
                    InstanceEvent.objects.filter(
                        instance_id=usage.instance_id, id__gt=usage.start_event_id, kind__in=kinds, at__lte=now
                    )
                    .order_by("id")
                    .first()
                )
                if end is not None:
                    usage.end_event, usage.ended_at = end, max(end.at, usage.started_at)
            _bill_one(usage=usage, now=now, result=result)
        interrupt("billed")
    return result


def _gpu_name(event: InstanceEvent) -> str:
    ran_on = Gpu.objects.filter(uuid=(event.data or {}).get("gpu") or "").values_list("name", flat=True).first()
    return ran_on or event.instance.gpu_type.display_name


def _bill_one(*, usage: UsageRecord, now: datetime, result: MeterResult) -> None:
    closing = usage.ended_at is not None
    seconds = max(0, ((usage.ended_at if closing else now) - usage.started_at) // timedelta(seconds=1))
    until = usage.ended_at if closing else usage.started_at + timedelta(seconds=seconds)
    if closing:
        new_billed = segment_cost(
            rate_usd=usage.rate_usd,
            seconds=seconds,
            minimum_seconds=usage.minimum_seconds,
            period_seconds=usage.rate_period_seconds,
        )
    elif until > usage.billed_until:
        new_billed = (usage.rate_usd * seconds / usage.rate_period_seconds).quantize(FINE, rounding=ROUND_HALF_UP)
    else:
        return
    delta = usage.billed_usd - new_billed
    key_suffix = "final" if closing else until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    usage.billed_until, usage.billed_usd = until, new_billed
    if closing:
        usage.duration_seconds, usage.cost_usd, usage.closed_at = seconds, new_billed, now
        result.closed += 1
    usage.save()
    result.billed += 1
    if delta != 0:
        LedgerEntry.objects.create(
            user_id=usage.user_id,
            kind=LedgerEntry.Kind.GPU_USAGE if usage.kind == "gpu" else LedgerEntry.Kind.STORAGE,
            amount_usd=delta,
            idempotency_key=f"usage:{usage.pk}:{key_suffix}",
            at=now,
            usage=usage,
        )
        with connection.cursor() as cur:
            cur.execute(_ACCOUNT_UPSERT, [usage.user_id, delta, now])
        result.entries += 1


# ---- enforcement ---------------------------------------------------------------------


@dataclass
class EnforceResult:
    stopped: list[str]
    emailed: list[str]


def balances_enforce(*, now: datetime | None = None, stop: Callable[..., Any] | None = None) -> EnforceResult:
    """Stop the running instances of users whose balance has been at or below zero for
    GPUCLOUD_NEGATIVE_GRACE_SECONDS (data kept; the stop event says why), and send the
    low-balance emails that are due.

    `stop` defaults to instances.services.instance_stop (enqueues the stop on the host).
    """
    now = now or timezone.now()
    stop = stop or instance_stop
    grace = timedelta(seconds=settings.GPUCLOUD_NEGATIVE_GRACE_SECONDS)
    with transaction.atomic():
        BillingAccount.objects.filter(balance_usd__lte=0, depleted_since__isnull=True).update(depleted_since=now)
        BillingAccount.objects.filter(balance_usd__gt=0, depleted_since__isnull=False).update(depleted_since=None)
    due = BillingAccount.objects.filter(balance_usd__lte=0, depleted_since__lte=now - grace).values("user_id")
    stopped = []
    for instance in Instance.objects.filter(owner_id__in=due, status=Instance.Status.RUNNING).select_related("owner"):
        try:
            stop(instance=instance, source=InstanceEvent.Source.BILLING, reason="balance exhausted")
        except DomainError as exc:  # one instance's refusal (a race with the user) must not spare the others
            logger.info("billing stop of %s refused: %s", instance.public_id, exc.code)
            continue
        logger.info("stopped %s: balance of user %s exhausted", instance.public_id, instance.owner_id)
        stopped.append(instance.public_id)
    return EnforceResult(stopped=stopped, emailed=low_balance_notify())


def _thresholds() -> list[Decimal]:
    return sorted(Decimal(t) for t in settings.GPUCLOUD_LOW_BALANCE_THRESHOLDS_USD)


def low_balance_notify() -> list[str]:
    """Email a user once each time their balance falls below a threshold; a top-up above
    it re-arms it. The claim is a conditional UPDATE, so two runs never both send."""
    thresholds = _thresholds()
    if not thresholds:
        return []
    candidates = BillingAccount.objects.filter(
        Q(balance_usd__lt=thresholds[-1]) | Q(low_balance_notified_usd__isnull=False)
    ).select_related("user")
    emailed = []
    for account in candidates:
        below = [t for t in thresholds if account.balance_usd < t]
        crossed = below[0] if below else None
        previous = account.low_balance_notified_usd
        if crossed == previous:
            continue
        same = Q(low_balance_notified_usd__isnull=True) if previous is None else Q(low_balance_notified_usd=previous)
        claimed = BillingAccount.objects.filter(same, pk=account.pk).update(low_balance_notified_usd=crossed)
        if claimed and crossed is not None and (previous is None or crossed < previous) and account.user.email:
            _low_balance_email(account=account, threshold=crossed)
            emailed.append(account.user.email)
    return emailed


def _low_balance_email(*, account: BillingAccount, threshold: Decimal) -> None:
    balance = money(account.balance_usd)
    send_mail(
        subject=f"GPU Cloud: your balance is below ${threshold}",
        message=(
            f"Hello {account.user.get_username()},\n\nYour GPU Cloud balance is ${balance}, below ${threshold}.\n"
            "Running instances are stopped (their data kept) when the balance reaches zero. "
            "Top up on the billing page to keep them running.\n"
        ),
        from_email=None,
        recipient_list=[account.user.email],
        fail_silently=True,
    )


# ---- the card step of the top-up page ------------------------------------------------


def topup_card_setup(*, user: Any) -> str:
    """A SetupIntent client secret for the page's card form (the customer exists by now)."""
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
