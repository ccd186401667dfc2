"""Periodic upkeep of one host besides reconciliation: GPU metrics and the removal of
destroyed instances' workspaces. Each is correct when a run is skipped or repeated."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.host.inventory import gpu_metrics_update
from instances.host.workspaces import workspace_remove
from instances.models import Host, Instance
from instances.services.events import Kind, Source, Status, event_add, logger


def gpu_metrics_refresh(*, host: Host) -> int:
    """Store NVML metrics of the host's real GPUs; simulated GPUs report none (logged)."""
    updated = gpu_metrics_update(host=host)
    simulated = host.gpus.filter(simulated=True).count()
    if simulated:
        logger.debug("host %s: %d simulated GPU(s) have no metrics", host.name, simulated)
    return updated


def workspace_cleanup(*, host: Host, grace_seconds: int | None = None) -> list[str]:
    """Remove the workspaces of instances terminated more than the grace period ago.

    Returns the public ids cleaned. Idempotent: a removed workspace is marked.
    """
    grace = settings.GPUCLOUD_WORKSPACE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timedelta(seconds=grace)
    due = Instance.objects.filter(
        host=host, status=Status.TERMINATED, workspace_removed_at__isnull=True, terminated_at__lte=cutoff
    )
    cleaned = []
    for instance in due:
        workspace_remove(instance=instance)
        with transaction.atomic():
            if Instance.objects.filter(pk=instance.pk, workspace_removed_at__isnull=True).update(
                workspace_removed_at=timezone.now()
            ):
                event_add(instance=instance, kind=Kind.WORKSPACE_REMOVED, source=Source.WORKER)
        cleaned.append(instance.public_id)
    return cleaned
