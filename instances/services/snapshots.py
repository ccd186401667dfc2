"""Snapshots of a workspace and restores from them: what customers and operators ask.

Each checks what it may, writes its rows and timeline events in one transaction, and
hands the work to the worker of the host that holds the workspace once that commits
(instances.services.snapshot_transfer does the work). None touches the store or a disk.

A snapshot is taken of a stopped workspace only (SnapshotNeedsStop otherwise: a
workspace written while tar reads it gives an archive of no single moment). "Destroy
and keep a snapshot" takes it from a running instance too: the destroy stops the
container first, and the snapshot task waits for that, then reads the workspace the
grace period keeps anyway.

Billing reads the `snapshot-ready` and `snapshot-deleted` events of the source
instance's timeline (their `data.snapshot`, `data.size_bytes`).
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.errors import (
    InvalidTransition,
    SnapshotBusy,
    SnapshotNeedsStop,
    SnapshotNotFound,
    SnapshotNotReady,
    SnapshotTooLarge,
)
from instances.models import Instance, Snapshot, SnapshotRestore
from instances.services.events import Kind, Source, Status, event_add

TAKE = "instances.tasks.snapshot_take_task"
RESTORE = "instances.tasks.snapshot_restore_task"
PURGE = "instances.tasks.snapshot_purge_task"
IN_PROGRESS = (Snapshot.Status.PENDING, Snapshot.Status.UPLOADING)
RESTORING = (SnapshotRestore.Status.PENDING, SnapshotRestore.Status.RUNNING)


def snapshot_list(*, user: Any) -> Any:
    """The user's snapshots that are not deleted, newest first."""
    return Snapshot.objects.filter(owner=user).exclude(status=Snapshot.Status.DELETED).select_related("instance")


def snapshot_get(*, user: Any, public_id: str) -> Snapshot:
    """One of the user's snapshots. Raises SnapshotNotFound for another's (404)."""
    found = snapshot_list(user=user).filter(public_id=str(public_id)).first()
    if found is None:
        raise SnapshotNotFound(detail={"snapshot": str(public_id)})
    return found


def workspace_busy(*, instance: Instance) -> bool:
    """Whether a snapshot or restore of the instance's workspace is in progress."""
    return (
        Snapshot.objects.filter(instance=instance, status__in=IN_PROGRESS).exists()
        or SnapshotRestore.objects.filter(instance=instance, status__in=RESTORING).exists()
    )


def _send(task: str, *, queue: str, **kwargs: Any) -> None:
    transaction.on_commit(lambda: current_app.send_task(task, kwargs=kwargs, queue=queue))


def snapshot_request(*, locked: Instance, name: str, actor: Any, source: str) -> Snapshot:
    """Record a snapshot of the locked instance's workspace and send its task on commit
    (the caller checked that the workspace may be read)."""
    snapshot = Snapshot(owner_id=locked.owner_id, instance=locked, name=(name or "").strip()[:64])
    snapshot.store = settings.GPUCLOUD_SNAPSHOT_STORE
    snapshot.object_key = f"snapshots/{int(locked.owner_id)}/{snapshot.public_id}.tar.zst"
    snapshot.save()
    event_add(
        instance=locked,
        kind=Kind.SNAPSHOT_REQUESTED,
        source=source,
        actor=actor,
        message=snapshot.name,
        data={"snapshot": snapshot.public_id},
    )
    _send(TAKE, queue=locked.host.queue, snapshot_id=snapshot.pk)  # type: ignore[union-attr]  # callers checked
    return snapshot


def snapshot_create(*, instance: Instance, name: str = "", actor: Any = None, source: str = Source.USER) -> Snapshot:
    """Snapshot the stopped instance's workspace into the object store (asynchronous).

    Raises SnapshotNeedsStop unless stopped, SnapshotBusy when a restore of it runs.
    """
    with transaction.atomic():
        locked = Instance.objects.select_for_update(of=("self",)).select_related("host").get(pk=instance.pk)
        if locked.status != Status.STOPPED or locked.host is None:
            raise SnapshotNeedsStop(detail={"status": locked.status})
        if SnapshotRestore.objects.filter(instance=locked, status__in=RESTORING).exists():
            raise SnapshotBusy(detail={"id": locked.public_id})
        return snapshot_request(locked=locked, name=name, actor=actor, source=source)


def snapshot_delete(*, snapshot: Snapshot, actor: Any = None, source: str = Source.USER) -> Snapshot:
    """Delete a snapshot: billing stops now, its object is removed by a task (retried
    while the store is down). An upload in progress finds it deleted and removes what it
    stored. Deleting a deleted one changes nothing."""
    now = timezone.now()
    with transaction.atomic():
        locked = Snapshot.objects.select_for_update().select_related("instance").get(pk=snapshot.pk)
        if locked.status == Snapshot.Status.DELETED:
            return locked
        was_ready = locked.status == Snapshot.Status.READY
        locked.status, locked.deleted_at = Snapshot.Status.DELETED, now
        locked.save(update_fields=["status", "deleted_at"])
        event_add(
            instance=locked.instance,
            kind=Kind.SNAPSHOT_DELETED,
            source=source,
            actor=actor,
            at=now,
            data={"snapshot": locked.public_id, "billed": was_ready},
        )
        _send(PURGE, queue="default", snapshot_id=locked.pk)
    return locked


def snapshot_check_fits(*, snapshot: Snapshot, storage_gb: int) -> None:
    """Raise SnapshotNotReady unless it is ready, SnapshotTooLarge when its files need
    more than `storage_gb` GB."""
    if snapshot.status != Snapshot.Status.READY:
        raise SnapshotNotReady(detail={"snapshot": snapshot.public_id, "status": snapshot.status})
    needed = int(snapshot.content_bytes or 0)
    if needed > int(storage_gb) * 2**30:
        raise SnapshotTooLarge(
            f"The snapshot holds {needed / 2**30:.2f} GiB; {storage_gb} GB of storage is too small for it.",
            detail={"snapshot": snapshot.public_id, "content_bytes": needed, "storage": storage_gb},
        )


def restore_at_launch(*, instance: Instance, snapshot: Snapshot) -> SnapshotRestore:
    """Record, in the launch's transaction, that provisioning fills the workspace from
    `snapshot` before the container starts (checked by snapshot_check_fits already)."""
    restore = SnapshotRestore.objects.create(snapshot=snapshot, instance=instance, total_bytes=snapshot.size_bytes or 0)
    event_add(
        instance=instance,
        kind=Kind.RESTORE_REQUESTED,
        source=Source.USER,
        data={"snapshot": snapshot.public_id},
    )
    return restore


def snapshot_restore(
    *, snapshot: Snapshot, instance: Instance, actor: Any = None, source: str = Source.USER
) -> SnapshotRestore:
    """Replace the stopped instance's workspace with the snapshot's files (asynchronous;
    the old files stay until the new ones are complete and verified).

    Raises InvalidTransition unless stopped, SnapshotBusy while another snapshot or
    restore of it runs, SnapshotNotReady, SnapshotTooLarge.
    """
    with transaction.atomic():
        locked = Instance.objects.select_for_update(of=("self",)).select_related("host").get(pk=instance.pk)
        if locked.status != Status.STOPPED or locked.host is None:
            raise InvalidTransition(
                f"Cannot restore into an instance that is {locked.status}: stop it first.",
                detail={"status": locked.status, "action": "restore"},
            )
        if workspace_busy(instance=locked):
            raise SnapshotBusy(detail={"id": locked.public_id})
        snapshot_check_fits(snapshot=snapshot, storage_gb=locked.storage_gb)
        restore = SnapshotRestore.objects.create(
            snapshot=snapshot, instance=locked, total_bytes=snapshot.size_bytes or 0
        )
        event_add(
            instance=locked,
            kind=Kind.RESTORE_REQUESTED,
            source=source,
            actor=actor,
            data={"snapshot": snapshot.public_id},
        )
        _send(RESTORE, queue=locked.host.queue, restore_id=restore.pk)
    return restore
