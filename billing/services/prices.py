"""GPU prices: a type's hourly rate and its history, so a segment is priced at the rate in
force when it opened (billing.services.metering reads the history)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing.models import GpuRate
from instances.models import GpuType

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def gpu_rate_record(*, gpu_type: GpuType, old_rate: Decimal, new_rate: Decimal, now: datetime) -> None:
    """Enter a rate change in the price history, once.

    The first change also records the old rate as in force since the epoch. A change to
    the rate the history already holds last records nothing: gpu_type_rate_set records
    with its own `now`, then saves, and billing.signals' pre_save receiver calls this again.
    """
    latest = GpuRate.objects.filter(gpu_type=gpu_type).order_by("-effective_at", "-id").first()
    if latest is None:
        GpuRate.objects.create(gpu_type=gpu_type, rate_per_hour=old_rate, effective_at=EPOCH)
    elif latest.rate_per_hour == new_rate:
        return
    GpuRate.objects.create(gpu_type=gpu_type, rate_per_hour=new_rate, effective_at=now)


def gpu_type_rate_set(*, gpu_type: GpuType, rate_per_hour: Decimal, now: datetime | None = None) -> GpuType:
    """Change a GPU type's hourly rate from `now` on; open segments keep their rate.

    Saves the type through the model, so its post_save receivers run (the API cache of
    instances shows rates); the history is recorded once, at `now`. Updates `gpu_type`.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = GpuType.objects.select_for_update().get(pk=gpu_type.pk)
        if locked.rate_per_hour != rate_per_hour:
            gpu_rate_record(gpu_type=locked, old_rate=locked.rate_per_hour, new_rate=rate_per_hour, now=now)
            locked.rate_per_hour = rate_per_hour
            locked.save(update_fields=["rate_per_hour"])
    gpu_type.refresh_from_db(fields=["rate_per_hour"])
    return gpu_type
