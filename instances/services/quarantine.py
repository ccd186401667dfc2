"""GPU quarantine: the rows of a GPU's health (no host access, so the admin may call it).

A fault is recorded once per (GPU, episode, code): seen again, it only counts. The
worker's checks (instances.services.health) record faults and quarantine; an operator
returns a GPU to service, which opens a new episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from instances.errors import GpuNotQuarantined
from instances.health_models import GpuHealthEvent, GpuHealthState
from instances.models import Gpu, Instance
from instances.services.events import logger

HealthKind = GpuHealthEvent.Kind


@dataclass(frozen=True)
class FaultSeen:
    code: str
    message: str
    stops: bool
    at: datetime  # the first sign of it (the reading's time, or the fault's own when known)


def health_state(*, gpu: Gpu) -> GpuHealthState:
    state, _ = GpuHealthState.objects.get_or_create(gpu=gpu)
    return state


def gpu_fault_record(
    *, gpu: Gpu, fault: FaultSeen, source: str, reading: dict[str, Any], instance: Instance | None, now: datetime
) -> tuple[GpuHealthEvent, bool]:
    """Record one fault of `gpu` in its current episode, once: a fault seen again only
    moves `last_seen_at` and `times_seen`. Returns the event and whether it is new."""
    episode = health_state(gpu=gpu).episode
    try:
        with transaction.atomic():
            event = GpuHealthEvent.objects.create(
                gpu=gpu,
                episode=episode,
                kind=HealthKind.FAULT,
                code=fault.code,
                source=source,
                stops=fault.stops,
                at=min(fault.at, now),
                last_seen_at=now,
                instance=instance,
                message=fault.message,
                reading=reading,
            )
        return event, True
    except IntegrityError:  # seen before in this episode (or by a concurrent check)
        pass
    seen = GpuHealthEvent.objects.filter(gpu=gpu, episode=episode, kind=HealthKind.FAULT, code=fault.code)
    seen.update(last_seen_at=now, times_seen=F("times_seen") + 1)
    return seen.get(), False


def gpu_quarantine(*, gpu: Gpu, reason: str, now: datetime) -> bool:
    """Take the GPU out of service (no new rentals). True when it was in service."""
    health_state(gpu=gpu)
    changed = GpuHealthState.objects.filter(gpu=gpu, quarantined=False).update(
        quarantined=True, quarantined_at=now, quarantine_reason=reason
    )
    if changed:
        logger.warning("GPU %s quarantined: %s", gpu.uuid, reason)
    return bool(changed)


def gpu_return_to_service(*, gpu: Gpu, actor: Any, note: str = "") -> GpuHealthEvent:
    """An operator's verdict that a quarantined GPU is fixed: rentable again, a new
    episode begun, the lifetime ECC count it reports now accepted as its baseline.
    Recorded as a `returned` event with the operator. Raises GpuNotQuarantined."""
    now = timezone.now()
    with transaction.atomic():
        state = GpuHealthState.objects.select_for_update().filter(gpu=gpu).first()
        if state is None or not state.quarantined:
            raise GpuNotQuarantined(detail={"gpu": gpu.uuid})
        reason = state.quarantine_reason
        state.quarantined, state.quarantined_at, state.quarantine_reason = False, None, ""
        state.episode += 1
        state.ecc_aggregate_baseline = max(
            state.ecc_aggregate_baseline, int(state.last_reading.get("ecc_uncorrectable_aggregate") or 0)
        )
        state.save()
        event = GpuHealthEvent.objects.create(
            gpu=gpu,
            episode=state.episode,
            kind=HealthKind.RETURNED,
            source=GpuHealthEvent.Source.OPERATOR,
            at=now,
            last_seen_at=now,
            actor=actor if getattr(actor, "pk", None) else None,
            message=note or f"returned to service (was quarantined: {reason})",
        )
    logger.info("GPU %s returned to service by %s", gpu.uuid, getattr(actor, "pk", None))
    return event
