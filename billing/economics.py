"""Operator economics: per GPU, per host and per month, what a GPU earned against what it
cost in electricity (and, optionally, amortized hardware).

- Revenue: the GPU segments that started in the month on that GPU (the `started`
  event's `gpu`), as billed so far (`billed_usd`); busy seconds likewise.
- Energy: the mean of the GPU's power samples in the month times the time they span
  (first to last sample, plus one metrics period), in kWh, at the electricity price.
  A GPU without samples (simulated ones, or no driver reading) shows no energy.
- Hardware: the amortized cost per GPU per month, pro rata for a month still running.
  Both prices: admin → Operator costs (the newest row), else the settings
  GPUCLOUD_ELECTRICITY_USD_PER_KWH and GPUCLOUD_HARDWARE_USD_PER_GPU_MONTH.
- Margin = revenue - energy cost - hardware cost. Utilization = busy / elapsed seconds.
Reads only; money in Decimal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, Max, Min, Sum
from django.utils import timezone

from billing.models import OperatorCosts, UsageRecord
from instances.models import Gpu, GpuPowerSample

CENT = Decimal("0.01")


def month_bounds(month: str | None) -> tuple[datetime, datetime, datetime]:
    """(start, end of what has elapsed, start of the next month) of "YYYY-MM" (this month
    when None). ValueError for anything else."""
    now = timezone.now()
    if month:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    else:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, max(start, min(following, now)), following


def operator_costs() -> tuple[Decimal, Decimal]:
    """(USD per kWh, USD per GPU per month): the admin's newest Operator costs, else settings."""
    costs = OperatorCosts.objects.order_by("-created_at", "-id").first()
    if costs is not None:
        return costs.electricity_usd_per_kwh, costs.hardware_usd_per_gpu_month
    return Decimal(settings.GPUCLOUD_ELECTRICITY_USD_PER_KWH), Decimal(settings.GPUCLOUD_HARDWARE_USD_PER_GPU_MONTH)


def gpu_economics(*, month: str | None = None) -> dict[str, Any]:
    """{"month", "rows": one per GPU, "hosts": totals per host, "total"} for the month."""
    start, end, following = month_bounds(month)
    elapsed = Decimal((end - start).total_seconds())
    fraction = elapsed / Decimal((following - start).total_seconds())
    price, hardware_month = operator_costs()
    hardware = (hardware_month * fraction).quantize(CENT)
    period = Decimal(settings.GPUCLOUD_METRICS_SECONDS)

    earned: dict[str, dict[str, Any]] = {
        row["start_event__data__gpu"]: dict(row)
        for row in UsageRecord.objects.filter(
            kind=UsageRecord.Kind.GPU, started_at__gte=start, started_at__lt=following
        )
        .values("start_event__data__gpu")
        .annotate(revenue=Sum("billed_usd"), seconds=Sum("billed_seconds"), segments=Count("id"))
        .order_by()
    }
    power = {
        row["gpu_id"]: row
        for row in GpuPowerSample.objects.filter(at__gte=start, at__lt=following)
        .values("gpu_id")
        .annotate(mean=Avg("power_w"), first=Min("at"), last=Max("at"), n=Count("id"))
        .order_by()
    }
    rows: list[dict[str, Any]] = []
    for gpu in Gpu.objects.select_related("host", "gpu_type").order_by("host__name", "index"):
        money: dict[str, Any] = earned.get(gpu.uuid) or {}
        revenue = Decimal(money.get("revenue") or 0).quantize(CENT)
        busy = int(money.get("seconds") or 0)
        sampled = power.get(gpu.pk)
        kwh = Decimal(0)
        if sampled:
            span = Decimal((sampled["last"] - sampled["first"]).total_seconds()) + period
            kwh = Decimal(sampled["mean"]) * min(span, elapsed) / Decimal(3_600_000)
        energy_cost = (kwh * price).quantize(CENT)
        rows.append(
            {
                "host": gpu.host.name,
                "gpu": f"#{gpu.index} {gpu.gpu_type.display_name if gpu.gpu_type else gpu.name}",
                "uuid": gpu.uuid,
                "simulated": gpu.simulated,
                "busy_hours": Decimal(busy / 3600).quantize(CENT),
                "utilization_percent": (Decimal(busy) * 100 / elapsed).quantize(Decimal("0.1")) if elapsed else 0,
                "revenue_usd": revenue,
                "energy_kwh": kwh.quantize(Decimal("0.001")),
                "energy_usd": energy_cost,
                "hardware_usd": hardware,
                "margin_usd": revenue - energy_cost - hardware,
            }
        )
    money_fields = ("revenue_usd", "energy_usd", "hardware_usd", "margin_usd", "energy_kwh", "busy_hours")
    hosts: dict[str, dict[str, Any]] = {}
    for row in rows:
        host = hosts.setdefault(
            row["host"], {"host": row["host"], "gpus": 0, **dict.fromkeys(money_fields, Decimal(0))}
        )
        host["gpus"] += 1
        for field in money_fields:
            host[field] += row[field]
    total = {field: sum((r[field] for r in rows), Decimal(0)) for field in money_fields}
    return {"month": start.strftime("%Y-%m"), "rows": rows, "hosts": list(hosts.values()), "total": total}


def recent_months(*, count: int = 12) -> list[str]:
    start, _, _ = month_bounds(None)
    months = []
    for _ in range(count):
        months.append(start.strftime("%Y-%m"))
        start = (start - timedelta(days=1)).replace(day=1)
    return months
