"""The worker's side of snapshots: workspace → object store and back, on the host that
holds the workspace, under the instance's lock (so no start, stop or second transfer
runs meanwhile).

Taking: tar | zstd | SHA-256 streamed into the store (instances.host.archive, .objectstore).
The row is `ready` only after the store holds the whole object; a store that fails
half-way leaves the row `pending` with the error (the task retries with backoff) and no
object under its key. Restoring: the object streamed through zstd and tar into a fresh
workspace (instances.host.workspaces.workspace_fresh), its SHA-256 compared with the
recorded one at the end: a mismatch discards everything, and the old workspace (if
any) is untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from instances.errors import (
    InfrastructureError,
    InstanceBusy,
    InstanceError,
    RestoreFailed,
    RuntimeFailure,
    SnapshotCorrupt,
)
from instances.host import loopfs
from instances.host.archive import ArchiveError, pack, unpack
from instances.host.objectstore import ObjectMissing, ObjectStore, store_for
from instances.host.workspaces import workspace_fresh, workspace_open
from instances.models import Instance, Snapshot, SnapshotRestore
from instances.services.events import Kind, Source, Status, event_add
from instances.services.locks import instance_lock

logger = logging.getLogger("instances.snapshots")
PROGRESS_SECONDS = 1.0
# A destroy-and-keep's snapshot waits for the destroy to take the container down.
_WAIT_FOR = (Status.STOPPING, Status.TERMINATING)


def transfer_ttl_seconds() -> float:
    # Outlives the snapshot tasks' own hard time limit (instances.tasks), as the default
    # TTL outlives CELERY_TASK_TIME_LIMIT.
    return settings.GPUCLOUD_SNAPSHOT_TIME_LIMIT_SECONDS + 60


class _Progress:
    """Writes `done` to a row about once a second from its own thread (the store's
    transfer threads read the archive, not this task's thread)."""

    def __init__(self, write: Callable[[int], Any]) -> None:
        self.done = 0
        self._write, self._stop = write, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        written = -1
        try:
            while not self._stop.wait(PROGRESS_SECONDS):
                if self.done != written:
                    written = self.done
                    self._write(written)
        finally:
            connection.close()  # this thread's own database connection

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def snapshot_take(*, snapshot_id: int, store: ObjectStore | None = None) -> Snapshot:
    """Archive the snapshot's workspace into the store; `ready` with its size and SHA-256.

    Raises InfrastructureError (retried: the store is unreachable, the instance still
    stopping); any other failure ends the snapshot `failed` with the reason.
    """
    snapshot = Snapshot.objects.select_related("instance", "instance__host").get(pk=snapshot_id)
    with instance_lock(instance_id=snapshot.instance_id, ttl_seconds=transfer_ttl_seconds()):
        snapshot.refresh_from_db()
        if snapshot.status not in (Snapshot.Status.PENDING, Snapshot.Status.UPLOADING):
            return snapshot
        instance = Instance.objects.select_related("host").get(pk=snapshot.instance_id)
        if instance.status in _WAIT_FOR:
            raise InstanceBusy("the instance is still being stopped", detail={"id": instance.public_id})
        if instance.status not in (Status.STOPPED, Status.TERMINATED) or instance.workspace_removed_at:
            return _fail(snapshot, f"the workspace is not available (instance {instance.status})")
        store = store or store_for(snapshot.store)
        Snapshot.objects.filter(pk=snapshot.pk).update(
            status=Snapshot.Status.UPLOADING, attempts=snapshot.attempts + 1, done_bytes=0
        )
        try:
            return _upload(snapshot=snapshot, instance=instance, store=store)
        except InfrastructureError as exc:
            _store_cleanup(store, snapshot)
            Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.UPLOADING).update(
                status=Snapshot.Status.PENDING, last_error=exc.message
            )
            raise
        except (ArchiveError, InstanceError, OSError) as exc:
            _store_cleanup(store, snapshot)
            return _fail(snapshot, str(getattr(exc, "message", None) or exc))
        except SoftTimeLimitExceeded:
            _store_cleanup(store, snapshot)
            return _fail(snapshot, "it took longer than GPUCLOUD_SNAPSHOT_TIME_LIMIT_SECONDS")


def _upload(*, snapshot: Snapshot, instance: Instance, store: ObjectStore) -> Snapshot:
    with workspace_open(instance=instance) as files:
        total = loopfs.usage(mountpoint=files).used_bytes if loopfs.is_mounted(mountpoint=files) else 0
        Snapshot.objects.filter(pk=snapshot.pk).update(total_bytes=total)

        def write(done: int) -> None:
            Snapshot.objects.filter(pk=snapshot.pk).update(done_bytes=done)

        with _Progress(write) as progress:

            def seen(tar_bytes: int) -> None:
                progress.done = tar_bytes

            with pack(source=files, level=settings.GPUCLOUD_SNAPSHOT_ZSTD_LEVEL, on_progress=seen) as stream:
                stored = store.put(key=snapshot.object_key, stream=stream)
            content = stream.content_bytes or progress.done
    if stored != stream.bytes_read:
        raise ArchiveError(f"the store holds {stored} bytes of {stream.bytes_read} sent")
    now = timezone.now()
    with transaction.atomic():
        done = Snapshot.objects.filter(pk=snapshot.pk, status=Snapshot.Status.UPLOADING).update(
            status=Snapshot.Status.READY,
            size_bytes=stored,
            content_bytes=content,
            sha256=stream.sha256,
            done_bytes=max(total, content),
            total_bytes=max(total, content),
            ready_at=now,
            last_error="",
        )
        if done:
            event_add(
                instance=instance,
                kind=Kind.SNAPSHOT_READY,
                source=Source.WORKER,
                at=now,
                message=f"{stored / 2**20:.1f} MiB stored",
                data={"snapshot": snapshot.public_id, "size_bytes": stored},
            )
    if not done:  # deleted while it was uploading: what was stored goes too
        _store_cleanup(store, snapshot)
    logger.info("snapshot %s: %d bytes stored", snapshot.public_id, stored)
    return Snapshot.objects.get(pk=snapshot.pk)


def _store_cleanup(store: ObjectStore, snapshot: Snapshot) -> None:
    try:
        store.delete(key=snapshot.object_key)
    except InfrastructureError as exc:  # still down: the next try (or the purge) aborts it
        logger.warning("snapshot %s: partial object not removed yet: %s", snapshot.public_id, exc.message)


def _fail(snapshot: Snapshot, reason: str) -> Snapshot:
    with transaction.atomic():
        if Snapshot.objects.filter(
            pk=snapshot.pk, status__in=(Snapshot.Status.PENDING, Snapshot.Status.UPLOADING)
        ).update(status=Snapshot.Status.FAILED, last_error=reason[:2000]):
            event_add(
                instance=snapshot.instance,
                kind=Kind.SNAPSHOT_FAILED,
                source=Source.WORKER,
                message=reason,
                data={"snapshot": snapshot.public_id},
            )
    logger.warning("snapshot %s failed: %s", snapshot.public_id, reason)
    return Snapshot.objects.get(pk=snapshot.pk)


def snapshot_give_up(*, snapshot_id: int, reason: str) -> Snapshot:
    """A snapshot whose store stayed unreachable through every retry: `failed`."""
    return _fail(Snapshot.objects.select_related("instance").get(pk=snapshot_id), reason)


def snapshot_purge(*, snapshot_id: int, store: ObjectStore | None = None) -> bool:
    """Remove a deleted snapshot's object. Raises InfrastructureError (retried)."""
    snapshot = Snapshot.objects.get(pk=snapshot_id)
    if snapshot.status != Snapshot.Status.DELETED:
        return False
    (store or store_for(snapshot.store)).delete(key=snapshot.object_key)
    return True


def restore_fill(*, restore: SnapshotRestore, instance: Instance, store: ObjectStore | None = None) -> None:
    """Fill the instance's workspace from the restore's snapshot, swapping it in only
    when complete and verified. Call under the instance's lock, with no container.

    Raises SnapshotCorrupt (checksum mismatch), RestoreFailed (tar or zstd refused it,
    the workspace too small), InfrastructureError (the store unreachable: retried).
    """
    snapshot = restore.snapshot
    store = store or store_for(snapshot.store)
    SnapshotRestore.objects.filter(pk=restore.pk).update(status=SnapshotRestore.Status.RUNNING, done_bytes=0)
    last = time.monotonic()
    try:
        with workspace_fresh(instance=instance) as target, store.open(key=snapshot.object_key) as chunks:
            with unpack(target=target) as sink:
                for chunk in chunks:
                    sink.write(chunk)
                    if time.monotonic() - last >= PROGRESS_SECONDS:
                        last = time.monotonic()
                        SnapshotRestore.objects.filter(pk=restore.pk).update(done_bytes=sink.bytes_written)
            # Still inside workspace_fresh: a mismatch discards the new files, keeps the old.
            if sink.sha256 != snapshot.sha256 or sink.bytes_written != snapshot.size_bytes:
                raise SnapshotCorrupt(detail={"snapshot": snapshot.public_id})
    except ObjectMissing as exc:
        raise RestoreFailed("The snapshot's object is missing from the store.") from exc
    except (ArchiveError, RuntimeFailure, OSError) as exc:
        raise RestoreFailed(f"The snapshot could not be restored: {getattr(exc, 'message', None) or exc}") from exc
    except SoftTimeLimitExceeded as exc:  # the new files are discarded; the workspace is as it was
        raise RestoreFailed("The restore took longer than its time limit.") from exc
    SnapshotRestore.objects.filter(pk=restore.pk).update(done_bytes=snapshot.size_bytes or 0)


def restore_finish(*, restore: SnapshotRestore, instance: Instance, error: InstanceError | None = None) -> None:
    """Record the restore's outcome on its row and the instance's timeline."""
    with transaction.atomic():
        SnapshotRestore.objects.filter(pk=restore.pk).update(
            status=SnapshotRestore.Status.FAILED if error else SnapshotRestore.Status.DONE,
            last_error=error.message if error else "",
            finished_at=timezone.now(),
        )
        event_add(
            instance=instance,
            kind=Kind.RESTORE_FAILED if error else Kind.RESTORED,
            source=Source.WORKER,
            message=error.message if error else "",
            data={"snapshot": restore.snapshot.public_id, **({"code": error.code} if error else {})},
        )


def restore_execute(*, restore_id: int, store: ObjectStore | None = None) -> SnapshotRestore:
    """Restore a snapshot into a stopped instance (the restore-into-stopped flow)."""
    restore = SnapshotRestore.objects.select_related("snapshot", "instance").get(pk=restore_id)
    with instance_lock(instance_id=restore.instance_id, ttl_seconds=transfer_ttl_seconds()):
        restore.refresh_from_db()
        if restore.status not in (SnapshotRestore.Status.PENDING, SnapshotRestore.Status.RUNNING):
            return restore
        instance = Instance.objects.select_related("host").get(pk=restore.instance_id)
        if instance.status != Status.STOPPED:
            restore_finish(
                restore=restore, instance=instance, error=RestoreFailed("The instance is no longer stopped.")
            )
            return SnapshotRestore.objects.get(pk=restore_id)
        try:
            restore_fill(restore=restore, instance=instance, store=store)
        except InfrastructureError:
            SnapshotRestore.objects.filter(pk=restore.pk).update(status=SnapshotRestore.Status.PENDING)
            raise
        except InstanceError as exc:
            restore_finish(restore=restore, instance=instance, error=exc)
        else:
            restore_finish(restore=restore, instance=instance)
    return SnapshotRestore.objects.get(pk=restore_id)


def restore_give_up(*, restore_id: int, reason: str) -> None:
    restore = SnapshotRestore.objects.select_related("snapshot", "instance").get(pk=restore_id)
    if restore.status in (SnapshotRestore.Status.PENDING, SnapshotRestore.Status.RUNNING):
        restore_finish(restore=restore, instance=restore.instance, error=RestoreFailed(reason))


def restore_pending_at_launch(*, instance: Instance) -> SnapshotRestore | None:
    """The launch's restore still to do for a provisioning instance, if any."""
    return (
        SnapshotRestore.objects.select_related("snapshot")
        .filter(instance=instance, status__in=(SnapshotRestore.Status.PENDING, SnapshotRestore.Status.RUNNING))
        .first()
    )
