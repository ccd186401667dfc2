"""Host registration, GPU inventory sync and GPU metrics (writes to Host and Gpu)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.host import gpus
from instances.models import Gpu, GpuPowerSample, GpuType, Host

logger = logging.getLogger(__name__)


@dataclass
class SyncResult:
    host: Host
    source: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    fallback_reason: str = ""


def host_sync(
    *,
    name: str | None = None,
    source: str | None = None,
    declared: list[dict] | None = None,
    discovered: tuple[list[gpus.GpuInfo], str] | None = None,
) -> SyncResult:
    """Register this machine as a Host and upsert its GPUs by UUID. Idempotent.

    Raises gpus.GpuInventoryError when `source` is "nvml" and NVML is unavailable.
    """
    name = name or settings.GPUCLOUD_HOST_NAME
    source = source or settings.GPUCLOUD_GPU_SOURCE
    declared = settings.GPUCLOUD_SIMULATED_GPUS if declared is None else declared
    fallback_reason = ""
    if discovered is None:
        if source == "auto":
            try:
                discovered = (gpus.nvml_inventory(), "nvml")
            except gpus.GpuInventoryError as exc:
                fallback_reason = str(exc)
                discovered = (gpus.simulated_inventory(host_name=name, declared=declared), "simulated")
        else:
            discovered = gpus.discover(source=source, host_name=name, declared=declared)
    inventory, found_source = discovered

    low, high = settings.GPUCLOUD_PORT_RANGE
    with transaction.atomic():
        host, _ = Host.objects.get_or_create(
            name=name,
            defaults={
                "docker_url": settings.GPUCLOUD_DOCKER_URL,
                "public_address": settings.GPUCLOUD_HOST_ADDRESS,
                "bind_address": settings.GPUCLOUD_BIND_ADDRESS,
                "port_range_start": low,
                "port_range_end": high,
            },
        )
        host.last_heartbeat_at = timezone.now()
        host.facts = {
            **host.facts,
            "gpu_source": found_source,
            "driver_version": next((g.driver_version for g in inventory), ""),
        }
        host.save(update_fields=["last_heartbeat_at", "facts"])
        types = {t.sku: t for t in GpuType.objects.all()}
        result = SyncResult(host=host, source=found_source, fallback_reason=fallback_reason)
        for info in inventory:
            wanted = {
                "host": host,
                "index": info.index,
                "name": info.name,
                "memory_mb": info.memory_mb,
                "simulated": info.simulated,
                "gpu_type": types.get(info.sku),
            }
            gpu = Gpu.objects.filter(uuid=info.uuid).first()
            if gpu is None:
                # A device moved to another index: free the index first.
                Gpu.objects.filter(host=host, index=info.index).exclude(uuid=info.uuid).update(index=10000 + info.index)
                Gpu.objects.create(uuid=info.uuid, **wanted)
                result.created.append(info.uuid)
                continue
            changed = [k for k, v in wanted.items() if getattr(gpu, k) != v and not (k == "gpu_type" and v is None)]
            if changed:
                for key in changed:
                    setattr(gpu, key, wanted[key])
                gpu.save(update_fields=changed)
                result.updated.append(info.uuid)
            else:
                result.unchanged.append(info.uuid)
    if fallback_reason:
        logger.info("host %s: NVML unavailable (%s); using the simulated inventory", name, fallback_reason)
    return result


def _simulated_metrics_update(*, host: Host) -> int:
    """Simulated GPUs report only the utilization set for them (simulate_gpu_utilization)."""
    now, updated = timezone.now(), 0
    for gpu in Gpu.objects.filter(host=host, simulated=True):
        percent = gpus.simulated_utilization(directory=settings.GPUCLOUD_SIMULATED_UTILIZATION_DIR, uuid=gpu.uuid)
        if percent is not None or gpu.utilization_percent is not None:
            Gpu.objects.filter(pk=gpu.pk).update(utilization_percent=percent, metrics_at=now)
            updated += 1
    return updated


def gpu_metrics_update(*, host: Host) -> int:
    """Store the latest NVML metrics of the host's real GPUs, and the utilization set for
    simulated ones.

    Returns how many GPUs got metrics. NVML errors are logged, never raised: metrics
    are best effort and a missed run is harmless.
    """
    simulated_updated = _simulated_metrics_update(host=host)
    real = Gpu.objects.filter(host=host, simulated=False)
    if not real.exists():
        return simulated_updated
    try:
        readings = {m.uuid: m for m in gpus.nvml_metrics()}
    except gpus.GpuInventoryError as exc:
        logger.warning("host %s: no GPU metrics: %s", host.name, exc)
        return 0
    now = timezone.now()
    updated = 0
    for gpu in real:
        m = readings.get(gpu.uuid)
        if m is None:
            continue
        gpu.utilization_percent = m.utilization_percent
        gpu.memory_used_mb = m.memory_used_mb
        gpu.temperature_c = m.temperature_c
        gpu.power_w = m.power_w
        gpu.metrics_at = now
        gpu.save(update_fields=["utilization_percent", "memory_used_mb", "temperature_c", "power_w", "metrics_at"])
        if m.power_w is not None:  # the history operator economics integrates into energy
            GpuPowerSample.objects.create(gpu=gpu, at=now, power_w=round(m.power_w, 1))
        updated += 1
    GpuPowerSample.objects.filter(
        gpu__host=host, at__lt=now - timedelta(days=settings.GPUCLOUD_POWER_SAMPLE_DAYS)
    ).delete()
    return updated
