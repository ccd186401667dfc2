"""Credits for GPUs that fell ill while rented: the time since the fault's first sign
is given back.

Level-driven, like the meter: instances.services.health records each fault (a
GpuHealthEvent whose `stops` says the policy stopped the instance); once the meter has
closed the GPU segment it happened in, this posts one credit for that segment — the
segment's rate for its whole seconds from the first sign (its start, when the fault
came first) to its end, rounded half up to the cent, at most the segment's cost —
under the key `gpu-fault:<segment>`, so it is posted once however often the fault was seen or this
ran. The FaultCredit row names the health events behind it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import QuerySet

from billing.fault_models import FaultCredit
from billing.models import LedgerEntry, UsageRecord
from billing.services.ledger import ledger_post, money
from instances.models import GpuHealthEvent

logger = logging.getLogger("billing")


def _stopping_faults() -> QuerySet[GpuHealthEvent]:
    return GpuHealthEvent.objects.filter(kind=GpuHealthEvent.Kind.FAULT, stops=True, instance__isnull=False)


def fault_credit_amount(*, usage: UsageRecord, fault_at: datetime) -> tuple[int, Decimal]:
    """(seconds credited, amount) for a closed GPU segment whose GPU fell ill at `fault_at`."""
    duration = int(usage.duration_seconds or 0)
    healthy = max(0, min(duration, (fault_at - usage.started_at) // timedelta(seconds=1)))
    credited = duration - healthy
    cost = usage.cost_usd or money(0)
    return credited, min(cost, money(usage.rate_usd * credited / usage.rate_period_seconds))


def gpu_fault_credits_post() -> list[FaultCredit]:
    """Credit every closed GPU segment a stopping fault fell in, once. Returns the new credits."""
    faults = _stopping_faults()
    segments = UsageRecord.objects.filter(
        kind=UsageRecord.Kind.GPU,
        closed_at__isnull=False,
        fault_credit__isnull=True,
        instance__in=faults.values("instance"),
    ).select_related("start_event")
    credits = []
    for usage in segments:
        behind = list(
            faults.filter(
                instance_id=usage.instance_id,
                gpu__uuid=usage.start_event.data.get("gpu", ""),
                at__lt=usage.ended_at,
                last_seen_at__gte=usage.started_at,
            ).order_by("at", "id")
        )
        if not behind:
            continue
        fault_at = behind[0].at
        seconds, amount = fault_credit_amount(usage=usage, fault_at=fault_at)
        codes = ", ".join(sorted({e.code for e in behind}))
        with transaction.atomic():
            entry = ledger_post(
                user_id=usage.user_id,
                kind=LedgerEntry.Kind.GPU_FAULT,
                amount_usd=amount,
                # Not `usage=`: the meter counts its own entries by that (the FaultCredit links it).
                idempotency_key=f"gpu-fault:{usage.pk}",
                reason=f"GPU fault ({codes}) from {fault_at:%Y-%m-%d %H:%M:%S} UTC: {seconds} s credited",
            )
            if entry is None:  # posted by a concurrent run
                continue
            credit = FaultCredit.objects.create(
                entry=entry, usage=usage, fault_at=fault_at, credited_seconds=seconds, amount_usd=amount
            )
            credit.events.set(behind)
        logger.info("GPU-fault credit %s to user %s for segment %s", amount, usage.user_id, usage.pk)
        credits.append(credit)
    return credits
