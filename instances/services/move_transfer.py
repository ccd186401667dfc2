"""The hosts' side of a move (instances.services.move): the snapshot on the old host's
worker, the restore on the new host's, the old copy's removal on the old host's.

Each step is safe to run twice (a task delivered again after its worker died): the
move's status is claimed with a conditional update, the snapshot and restore are
those of instances.services.snapshot_transfer (resumable, checksummed). A host that
dies mid-step leaves its task unacknowledged: it runs again when the host is back, and
until then the instance stays stopped on its old host with its files there.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from gpucloud.errors import DomainError
from instances.errors import InfrastructureError, InstanceError, RestoreFailed, RuntimeFailure
from instances.host.workspaces import workspace_remove
from instances.models import Instance, InstanceMove, Snapshot, SnapshotRestore
from instances.services.events import Kind, Source, Status, event_add
from instances.services.locks import instance_lock
from instances.services.move import move_done, move_fail, restore_request
from instances.services.snapshot_transfer import restore_fill, restore_finish, snapshot_take, transfer_ttl_seconds
from instances.services.transitions import instance_start

logger = logging.getLogger("instances.move")


def _load(move_id: int) -> InstanceMove:
    return InstanceMove.objects.select_related("from_host", "to_host", "snapshot", "restore").get(pk=move_id)


def move_snapshot(*, move_id: int) -> InstanceMove:
    """On the old host: snapshot the workspace, then send the restore to the new host.

    Raises InfrastructureError (the store unreachable: retried)."""
    move = _load(move_id)
    if move.status != InstanceMove.Status.SNAPSHOTTING:
        return move
    snapshot = snapshot_take(snapshot_id=move.snapshot_id)
    if snapshot.status == Snapshot.Status.READY:
        with transaction.atomic():
            restore_request(move=move)
    elif snapshot.status in (Snapshot.Status.FAILED, Snapshot.Status.DELETED):
        return move_fail(move=move, reason=f"its snapshot was not stored: {snapshot.last_error or snapshot.status}")
    return _load(move_id)


def move_restore(*, move_id: int) -> InstanceMove:
    """On the new host: restore the snapshot into a fresh workspace (checked against its
    SHA-256), move the row to this host, then start the instance here.

    Raises InfrastructureError (the store unreachable: retried)."""
    move = _load(move_id)
    with instance_lock(instance_id=move.instance_id, ttl_seconds=transfer_ttl_seconds()):
        move.refresh_from_db()
        if move.status == InstanceMove.Status.FAILED:  # e.g. this host was lost meanwhile
            _discard_stale(move=move)
            return move
        if move.status != InstanceMove.Status.RESTORING or move.restore is None:
            return move
        restore = SnapshotRestore.objects.select_related("snapshot").get(pk=move.restore.pk)
        instance = Instance.objects.select_related("host").get(pk=move.instance_id)
        if instance.status != Status.STOPPED or instance.host_id != move.from_host_id:
            error = RestoreFailed(f"the instance became {instance.status} while it was moving")
            restore_finish(restore=restore, instance=instance, error=error)
            return move_fail(move=move, reason=error.message)
        try:
            restore_fill(restore=restore, instance=instance)
        except InfrastructureError:
            SnapshotRestore.objects.filter(pk=restore.pk).update(status=SnapshotRestore.Status.PENDING)
            raise
        except InstanceError as exc:
            restore_finish(restore=restore, instance=instance, error=exc)
            _discard_here(move=move, instance=instance)
            return move_fail(move=move, reason=exc.message)
        restore_finish(restore=restore, instance=instance)
        if not move_done(move=move):
            _discard_here(move=move, instance=instance)
            return move_fail(move=move, reason="the instance changed while it was moving")
    # Outside the lock: the start's own task takes it on this host.
    try:
        instance_start(instance=Instance.objects.get(pk=move.instance_id), source=Source.WORKER, reason="moved")
    except DomainError as exc:  # e.g. its GPU was taken meanwhile: it stays stopped here
        event_add(
            instance=instance,
            kind=Kind.NOTE,
            source=Source.WORKER,
            message=f"Moved, but not started: {exc.message}",
            data={"code": exc.code},
        )
    return _load(move_id)


def _discard_here(*, move: InstanceMove, instance: Instance) -> None:
    """Remove what this (the new) host wrote of a move that did not complete."""
    if move.to_host.name != settings.GPUCLOUD_HOST_NAME or move.to_host_id == move.from_host_id:
        return
    try:
        workspace_remove(instance=instance)
    except (RuntimeFailure, OSError) as exc:
        logger.warning("move %s: the new host's partial copy stays: %s", move.pk, exc)


def _discard_stale(*, move: InstanceMove) -> None:
    """A failed move's restore task, run late on this host: what an interrupted restore
    left here goes, unless the instance lives here now or is moving here again."""
    instance = Instance.objects.get(pk=move.instance_id)
    again = InstanceMove.objects.filter(instance=instance, to_host=move.to_host, status__in=InstanceMove.ACTIVE)
    if instance.host_id != move.to_host_id and not again.exists():
        _discard_here(move=move, instance=instance)


def move_cleanup(*, move_id: int) -> bool:
    """On the old host, once the move is done: remove the old copy of the workspace.
    True when something was removed. Raises RuntimeFailure while it is busy (retried)."""
    move = _load(move_id)
    if move.status != InstanceMove.Status.DONE or move.from_host.name != settings.GPUCLOUD_HOST_NAME:
        return False
    instance = Instance.objects.get(pk=move.instance_id)
    removed = workspace_remove(instance=instance)
    if removed:
        event_add(
            instance=instance,
            kind=Kind.NOTE,
            source=Source.WORKER,
            message=f"The old copy of the workspace on {move.from_host.name} was removed.",
            data={"move": move.pk, "host": move.from_host.name},
        )
    return removed


def move_give_up(*, move_id: int, reason: str) -> InstanceMove:
    """A step whose store stayed unreachable through every retry: the move fails."""
    move = _load(move_id)
    restore = SnapshotRestore.objects.filter(
        pk=move.restore.pk if move.restore else 0,
        status__in=(SnapshotRestore.Status.PENDING, SnapshotRestore.Status.RUNNING),
    ).first()
    if restore is not None:
        restore_finish(restore=restore, instance=restore.instance, error=RestoreFailed(reason))
    return move_fail(move=move, reason=reason)
