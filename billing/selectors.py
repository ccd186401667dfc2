"""Billing reads: balances, usage and the ledger, scoped to a user."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncMonth

from billing.errors import InvalidMonth
from billing.models import BillingAccount, LedgerEntry, UsageRecord, UserLimits


def balance_get(*, user: Any) -> Decimal:
    """The user's balance (the cached sum of their ledger), at full precision."""
    value = BillingAccount.objects.filter(user_id=user.pk).values_list("balance_usd", flat=True).first()
    return value if value is not None else Decimal(0)


def balance_from_ledger(*, user: Any) -> Decimal:
    """The balance recomputed from the ledger itself (audits and tests)."""
    return LedgerEntry.objects.filter(user_id=user.pk).aggregate(total=Sum("amount_usd"))["total"] or Decimal(0)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """`YYYY-MM` → [first instant, first instant of the next month). Raises InvalidMonth."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except (TypeError, ValueError) as exc:
        raise InvalidMonth(detail={"month": str(month)}) from exc
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def usage_list(*, user: Any, month: str | None = None) -> QuerySet[UsageRecord]:
    """The user's usage segments, newest first; with `month`, those that started in it."""
    qs = UsageRecord.objects.filter(user_id=user.pk).select_related("instance", "gpu_type")
    if month:
        start, end = month_bounds(month)
        qs = qs.filter(started_at__gte=start, started_at__lt=end)
    return qs.order_by("-started_at", "-id")


def ledger_list(*, user: Any) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(user_id=user.pk).select_related("usage").order_by("-at", "-id")


def usage_summary(*, queryset: QuerySet[UsageRecord] | None = None) -> list[dict[str, Any]]:
    """Usage per user, kind, GPU type and month: segments, seconds and cost billed so far."""
    qs = UsageRecord.objects.all() if queryset is None else queryset
    return [
        dict(row)
        for row in qs.annotate(month=TruncMonth("started_at"))
        .values("user__username", "kind", "gpu_type__sku", "month")
        .annotate(segments=Count("id"), seconds=Sum("duration_seconds"), cost_usd=Sum("billed_usd"))
        .order_by("-month", "user__username", "kind", "gpu_type__sku")
    ]


# What a customer spends: the meter's GPU and storage debits, less the GPU time a GPU
# fault gave back (top-ups, refunds and operator adjustments are not spending).
SPEND_KINDS = (
    LedgerEntry.Kind.GPU_USAGE,
    LedgerEntry.Kind.STORAGE,
    LedgerEntry.Kind.SNAPSHOT,
    LedgerEntry.Kind.GPU_FAULT,
)


def limits_get(*, user: Any) -> dict[str, Any]:
    """The user's effective limits: `max_instances`, `max_gpus`, `max_spend_per_hour_usd`
    (the operator's override, else the GPUCLOUD_LIMIT_* setting; None or 0 = no limit)
    and the customer's `daily_cap_usd` / `monthly_cap_usd` (None = no cap)."""
    row = UserLimits.objects.filter(user_id=user.pk).first()

    def pick(name: str, default: Any) -> Any:
        value = getattr(row, name, None)
        return default if value is None else value

    return {
        "max_instances": pick("max_instances", settings.GPUCLOUD_LIMIT_INSTANCES),
        "max_gpus": pick("max_gpus", settings.GPUCLOUD_LIMIT_GPUS),
        "max_spend_per_hour_usd": pick("max_spend_per_hour_usd", settings.GPUCLOUD_LIMIT_SPEND_PER_HOUR_USD),
        "daily_cap_usd": getattr(row, "daily_cap_usd", None),
        "monthly_cap_usd": getattr(row, "monthly_cap_usd", None),
    }


def spend_since(*, user: Any, since: datetime) -> Decimal:
    """GPU and storage charges posted to the user's ledger at or after `since` (a
    positive Decimal; ledger_user_at serves the range)."""
    total = LedgerEntry.objects.filter(user_id=user.pk, kind__in=SPEND_KINDS, at__gte=since).aggregate(
        total=Sum("amount_usd")
    )["total"]
    return -(total or Decimal(0))


def period_starts(*, now: datetime) -> tuple[datetime, datetime]:
    """The start of `now`'s UTC day and of its UTC month."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def limits_summary(*, user: Any, now: datetime) -> dict[str, Any]:
    """What the billing page and GET /api/billing/limits show: the effective limits
    (limits_get) and what was spent since the start of the UTC day and month."""
    day, month = period_starts(now=now)
    return {
        **limits_get(user=user),
        "spent_today_usd": spend_since(user=user, since=day),
        "spent_this_month_usd": spend_since(user=user, since=month),
    }
