"""Periodic upkeep of one host besides reconciliation: GPU metrics, the usage of mounted
workspaces, and the removal of destroyed instances' workspaces. Each is correct when a
run is skipped or repeated."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.errors import RuntimeFailure
from instances.host import loopfs
from instances.host.inventory import gpu_metrics_update
from instances.host.workspaces import workspace_mounts, workspace_remove, workspace_usage
from instances.models import Host, Instance, Snapshot, WorkspaceUsage
from instances.services.events import CONTAINER_STATUSES, Kind, Source, Status, event_add, logger
from instances.services.locks import instance_lock_name, lock_acquire, lock_release


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
    ).exclude(  # a destroy-and-keep's snapshot still reads it
        snapshots__status__in=(Snapshot.Status.PENDING, Snapshot.Status.UPLOADING)
    )
    cleaned = []
    for instance in due:
        try:
            workspace_remove(instance=instance)
        except RuntimeFailure as exc:  # still mounted and busy: the next run tries again
            logger.warning("workspace of %s not removed: %s", instance.public_id, exc.message)
            continue
        with transaction.atomic():
            if Instance.objects.filter(pk=instance.pk, workspace_removed_at__isnull=True).update(
                workspace_removed_at=timezone.now()
            ):
                event_add(instance=instance, kind=Kind.WORKSPACE_REMOVED, source=Source.WORKER)
        cleaned.append(instance.public_id)
    return cleaned


def workspace_usage_record(*, instance: Instance, usage: loopfs.Usage | None = None) -> WorkspaceUsage | None:
    """Store the workspace's used / size (measured now when `usage` is None); tell the
    customer once (a `storage-low` event) when it passes GPUCLOUD_WORKSPACE_LOW_PERCENT.
    None when the workspace is not mounted."""
    usage = usage or workspace_usage(instance=instance)
    if usage is None:
        return None
    now = timezone.now()
    with transaction.atomic():
        row, _ = WorkspaceUsage.objects.select_for_update().get_or_create(
            instance=instance, defaults={"used_bytes": 0, "size_bytes": usage.size_bytes, "measured_at": now}
        )
        row.used_bytes, row.size_bytes, row.measured_at = usage.used_bytes, usage.size_bytes, now
        low = usage.percent >= settings.GPUCLOUD_WORKSPACE_LOW_PERCENT
        if low and row.low_notified_at is None:
            row.low_notified_at = now
            event_add(
                instance=instance,
                kind=Kind.STORAGE_LOW,
                source=Source.WORKER,
                message=f"/workspace is {usage.percent:.0f}% full: writes fail with 'No space left on device' "
                "at 100%. Delete files, or stop the instance and grow its storage.",
                data={"used_bytes": usage.used_bytes, "size_bytes": usage.size_bytes},
            )
        elif not low:
            row.low_notified_at = None
        row.save()
    return row


def workspace_upkeep(*, host: Host) -> dict[str, list[str]]:
    """Measure the mounted workspaces of this host's live instances; unmount those whose
    instance has no container any more (a container removed out of band, a row gone).
    Returns the public ids measured and unmounted."""
    mounts = workspace_mounts()
    rows = {i.public_id: i for i in Instance.objects.filter(public_id__in=list(mounts)).select_related("host")}
    report: dict[str, list[str]] = {"measured": [], "unmounted": []}
    for public_id, path in mounts.items():
        instance = rows.get(public_id)
        if instance is not None and instance.status in CONTAINER_STATUSES:
            if instance.host_id == host.pk and workspace_usage_record(instance=instance) is not None:
                report["measured"].append(public_id)
            continue
        # Under the instance's lock, the status read again: a start that began since the
        # read above has mounted it for the container it is about to make, and an unmount
        # now would hand that container the bare directory of the data root.
        held = lock_acquire(name=instance_lock_name(instance_id=instance.pk)) if instance is not None else None
        if instance is not None and held is None:
            continue  # a task is working on it
        try:
            idle = (
                instance is None or not Instance.objects.filter(pk=instance.pk, status__in=CONTAINER_STATUSES).exists()
            )
            if idle and loopfs.unmount(mountpoint=path):
                report["unmounted"].append(public_id)
        except RuntimeFailure as exc:
            logger.warning("workspace %s stays mounted: %s", public_id, exc.message)
        finally:
            if held is not None:
                lock_release(held=held)
    return report
