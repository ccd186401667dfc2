"""GPU health on the worker: the gate before each rental and the watch while rented.

The gate (gpu_gate, called by instances.services.provision before the container is
made) reads the instance's GPU; a sick one is quarantined and another free GPU of the
type on the same host (which keeps the instance's ports and workspace) is taken and
read in turn, until a healthy one is found or none is left (NoHealthyGpu).

The watch (gpu_health_check, a beat job per host) reads every GPU of the host,
records what it finds, quarantines sick GPUs, writes each new fault on the timeline
of the instance renting the GPU, and stops that instance when the operator's policy
(GPUCLOUD_GPU_FAULT_STOP) says the fault is fatal. Billing credits the customer from
the facts recorded here (billing.services.fault_credits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from gpucloud.errors import DomainError
from instances.errors import NoHealthyGpu
from instances.health_models import GpuHealthEvent, GpuHealthState
from instances.host import gpus as gpulib
from instances.host.health import Finding, faults_load, findings, simulated_reading
from instances.models import Gpu, Host, Instance
from instances.services.events import Kind, Source, Status, event_add, logger
from instances.services.quarantine import FaultSeen, gpu_fault_record, gpu_quarantine, health_state
from instances.services.scheduling import gpu_take
from instances.services.transitions import instance_stop

GATE_ATTEMPTS = 8


@dataclass
class HealthReport:
    checked: int = 0
    quarantined: list[str] = field(default_factory=list)
    new_faults: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)


def gpu_readings(*, host: Host, gpus: list[Gpu]) -> dict[str, tuple[gpulib.GpuHealth, datetime | None]]:
    """Each GPU's reading by UUID, with the fault's own start time when it is known
    (the simulated inventory's `since`). Real GPUs are read through NVML in one pass;
    NVML failing as a whole leaves every real GPU `answering=False`."""
    out: dict[str, tuple[gpulib.GpuHealth, datetime | None]] = {}
    faults = faults_load(settings.GPUCLOUD_SIMULATED_GPU_FAULTS_FILE).get(host.name, {})
    for gpu in (g for g in gpus if g.simulated):
        fault = faults.get(str(gpu.index))
        since = parse_datetime(fault["since"]) if fault and fault.get("since") else None
        out[gpu.uuid] = (simulated_reading(uuid=gpu.uuid, fault=fault), since)
    real = [g.uuid for g in gpus if not g.simulated]
    if real:
        try:
            readings = gpulib.nvml_health(uuids=real)
        except gpulib.GpuInventoryError as exc:
            readings = [gpulib.GpuHealth(uuid=u, answering=False, error=str(exc)) for u in real]
        out.update({r.uuid: (r, None) for r in readings})
    return out


def _judge(gpu: Gpu, reading: gpulib.GpuHealth, since: datetime | None, now: datetime) -> list[FaultSeen]:
    state = health_state(gpu=gpu)
    found: list[Finding] = findings(
        reading,
        ecc_aggregate_baseline=state.ecc_aggregate_baseline,
        temperature_margin_c=settings.GPUCLOUD_GPU_TEMPERATURE_MARGIN_C,
    )
    GpuHealthState.objects.filter(gpu=gpu).update(checked_at=now, last_reading=asdict(reading))
    stop = set(settings.GPUCLOUD_GPU_FAULT_STOP)
    return [FaultSeen(code=f.code, message=f.message, stops=f.family in stop, at=since or now) for f in found]


def _record(
    *, gpu: Gpu, faults: list[FaultSeen], reading: gpulib.GpuHealth, source: str, instance: Instance | None
) -> list[GpuHealthEvent]:
    """Record the faults and quarantine the GPU; the events first seen now."""
    now = timezone.now()
    new = []
    for fault in faults:
        event, created = gpu_fault_record(
            gpu=gpu, fault=fault, source=source, reading=asdict(reading), instance=instance, now=now
        )
        if created:
            new.append(event)
    gpu_quarantine(gpu=gpu, reason="; ".join(f"{f.code}: {f.message}" for f in faults), now=now)
    return new


def gpu_gate(*, instance: Instance, expected: str) -> Instance:
    """Check the instance's GPU before its container is made; move it to another free
    GPU of its type on its host while the one it holds is sick (quarantining each sick
    one). Returns the instance as it now is (possibly no longer `expected`: destroyed
    meanwhile). Raises NoHealthyGpu when no healthy GPU is left."""
    for _ in range(GATE_ATTEMPTS):
        gpu = instance.gpu
        if gpu is None or instance.status != expected:
            return instance
        reading, since = gpu_readings(host=gpu.host, gpus=[gpu])[gpu.uuid]
        faults = _judge(gpu, reading, since, timezone.now())
        if not faults:
            return instance
        _record(gpu=gpu, faults=faults, reading=reading, source=GpuHealthEvent.Source.GATE, instance=instance)
        codes = ", ".join(f.code for f in faults)
        with transaction.atomic():
            locked = Instance.objects.select_for_update(of=("self",)).get(pk=instance.pk)
            if locked.status != expected or locked.gpu_id != gpu.pk:
                return _reload(instance.pk)
            other = gpu_take(gpu_type=locked.gpu_type, host=gpu.host, new_instance=False)
            if other is None:
                raise NoHealthyGpu(
                    f"GPU {gpu.index} failed its health check ({codes}) and no other healthy "
                    f"{locked.gpu_type.display_name} is free on this host.",
                    detail={"gpu": gpu.uuid, "faults": [f.code for f in faults]},
                )
            locked.gpu = other
            locked.save(update_fields=["gpu", "updated_at"])
            event_add(
                instance=locked,
                kind=Kind.GPU_FAULT,
                source=Source.WORKER,
                message=f"GPU {gpu.index} failed its health check before the start ({codes}); GPU {other.index} "
                "was taken instead",
                data={"gpu": gpu.uuid, "faults": [f.code for f in faults], "moved_to": other.uuid},
            )
        instance = _reload(instance.pk)
    raise NoHealthyGpu(detail={"attempts": GATE_ATTEMPTS})


def _reload(instance_id: int) -> Instance:
    return Instance.objects.select_related("host", "gpu", "gpu__host", "gpu_type", "template").get(pk=instance_id)


def gpu_health_check(*, host: Host, stop: Callable[..., Any] | None = None) -> HealthReport:
    """Read every GPU of this host and act on what is found (see the module's docstring).

    Safe to repeat: a fault already recorded in the GPU's episode is only counted again,
    and only a `running` instance is asked to stop."""
    stop = stop or instance_stop
    report = HealthReport()
    gpus = list(Gpu.objects.filter(host=host).select_related("host"))
    readings = gpu_readings(host=host, gpus=gpus)
    now = timezone.now()
    for gpu in gpus:
        reading, since = readings[gpu.uuid]
        report.checked += 1
        faults = _judge(gpu, reading, since, now)
        if not faults:
            continue
        holder = (
            Instance.objects.filter(gpu=gpu, status__in=Instance.GPU_HOLDING).select_related("owner", "host").first()
        )
        was_quarantined = GpuHealthState.objects.filter(gpu=gpu, quarantined=True).exists()
        new = _record(gpu=gpu, faults=faults, reading=reading, source=GpuHealthEvent.Source.WATCH, instance=holder)
        if not was_quarantined:
            report.quarantined.append(gpu.uuid)
        report.new_faults += [e.code for e in new]
        if holder is None:
            continue
        for event in new:
            event_add(
                instance=holder,
                kind=Kind.GPU_FAULT,
                source=Source.WORKER,
                message=f"GPU fault: {event.message}"
                + (" — the instance is stopped; the time since is credited" if event.stops else " — it keeps running"),
                data={
                    "health_event": event.pk,
                    "code": event.code,
                    "since": event.at.isoformat(),
                    "stops": event.stops,
                },
            )
        if holder.status == Status.RUNNING and any(f.stops for f in faults):
            reason = "GPU fault: " + ", ".join(f.code for f in faults if f.stops)
            try:
                stop(instance=holder, source=Source.WORKER, reason=reason)
            except DomainError as exc:  # a race with its owner's own stop
                logger.info("GPU-fault stop of %s refused: %s", holder.public_id, exc.code)
            else:
                report.stopped.append(holder.public_id)
    return report
