"""Resume anywhere: a stopped instance whose own host cannot take it (no free GPU of its
type, draining, unreachable) starts on another host, its workspace moved through the
object store (instances.services.move_transfer does the work on the hosts).

The customer is told first: a start that needs a move is refused with MoveRequired
(409 `instances:move-required`, with the workspace's size and why), and confirmed with
`move=True` (`?move=1`, the page's button, `gpucloud start --move`).

A move is: a snapshot on the old host (the instance's lock held, so nothing starts it
meanwhile), a restore on the new host (verified by its SHA-256), then in one
transaction the row's host is changed; only after that commit is the old copy removed
(a task on the old host's queue) and the move's snapshot deleted, and the instance is
started on its new host. The instance stays `stopped` throughout: no GPU is held and no
GPU segment is open while it moves, and its storage segment is the one it had (billing
counts storage per instance, not per host). The move's own snapshot is never billed
(instances.selectors.snapshot_segment_starts leaves it out).

A move that fails (the snapshot or the restore refused, the store gone for good) leaves
the instance stopped on its old host, its files untouched there, with the reason in
`last_error` and a `move-failed` event; what the new host had written is discarded.

An unreachable old host cannot be read: the move is refused (MoveImpossible) unless a
snapshot of the instance taken since its last stop is ready, which then restores on the
new host (the old copy is removed when the old host comes back and runs its queue).
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from instances.errors import MoveImpossible, MoveRequired
from instances.models import Host, Instance, InstanceMove, Snapshot, SnapshotRestore, WorkspaceUsage
from instances.services.events import Kind, Source, Status, event_add
from instances.services.scheduling import hosts_ranked
from instances.services.snapshots import snapshot_delete, workspace_busy

SNAPSHOT = "instances.tasks.instance_move_snapshot_task"
RESTORE = "instances.tasks.instance_move_restore_task"
CLEANUP = "instances.tasks.instance_move_cleanup_task"


def move_active(*, instance: Instance) -> bool:
    return InstanceMove.objects.filter(instance=instance, status__in=InstanceMove.ACTIVE).exists()


def _why(host: Host) -> str:
    return host.status if host.status != Host.Status.ONLINE else "no-free-gpu"


def move_plan(*, instance: Instance) -> dict[str, Any] | None:
    """What starting the stopped instance elsewhere would mean, when its own host cannot
    take it and another can: `reason` (the own host's status, or `no-free-gpu`),
    `size_bytes` (the workspace's last measured use), `from_host`, `to_host`. None when
    its own host takes it, or no other host does (the start then answers as before)."""
    host = instance.host
    if instance.status != Status.STOPPED or host is None:
        return None
    template = instance.template
    if host.status == Host.Status.ONLINE and hosts_ranked(gpu_type=instance.gpu_type, host=host, template=template):
        return None
    others = [pk for pk in hosts_ranked(gpu_type=instance.gpu_type, template=template) if pk != host.pk]
    if not others:
        return None
    usage = WorkspaceUsage.objects.filter(instance=instance).values_list("used_bytes", flat=True).first()
    return {
        "reason": _why(host),
        "size_bytes": int(usage or 0),
        "from_host": host.name,
        "to_host": Host.objects.get(pk=others[0]).name,
    }


def move_required(plan: dict[str, Any]) -> MoveRequired:
    size_mib = plan["size_bytes"] / 2**20
    why = {
        "no-free-gpu": "has no free GPU of its type",
        Host.Status.DRAINING: "is being drained for maintenance",
        Host.Status.UNREACHABLE: "is unreachable",
    }.get(plan["reason"], f"is {plan['reason']}")
    return MoveRequired(
        f"This instance's host {why}. Starting it on another host moves its workspace "
        f"({size_mib:.1f} MiB) there first; confirm with move=1 (`gpucloud start --move`).",
        detail={"reason": plan["reason"], "size_bytes": plan["size_bytes"]},
    )


def _usable_snapshot(*, instance: Instance) -> Snapshot | None:
    """The newest ready snapshot of the instance taken since its last stop: it holds
    what the workspace holds (nothing ran on it since)."""
    since = Q() if instance.stopped_at is None else Q(ready_at__gte=instance.stopped_at)
    return Snapshot.objects.filter(since, instance=instance, status=Snapshot.Status.READY).order_by("-ready_at").first()


def _send(task: str, *, queue: str, move_id: int) -> None:
    transaction.on_commit(lambda: current_app.send_task(task, kwargs={"move_id": move_id}, queue=queue))


def instance_move(*, instance: Instance, actor: Any = None, source: str = Source.USER) -> InstanceMove:
    """Begin moving the stopped instance's workspace to the best other host that takes
    it, then start it there (asynchronous). The caller checked admission.

    Raises MoveImpossible (a move of it under way, the old host unreachable without a
    usable snapshot, no other host takes it any more).
    """
    with transaction.atomic():
        locked = Instance.objects.select_for_update(of=("self",)).select_related("host", "template").get(pk=instance.pk)
        plan = move_plan(instance=locked)
        if plan is None:
            raise MoveImpossible(
                "No other host takes this instance now; start it again.", detail={"status": locked.status}
            )
        if move_active(instance=locked) or workspace_busy(instance=locked):
            raise MoveImpossible("A move, snapshot or restore of this workspace is under way.")
        old, new = locked.host, Host.objects.get(name=plan["to_host"])
        if old is None:  # move_plan returns None for it: unreachable, for the type checker
            raise MoveImpossible(detail={"status": locked.status})
        made = old.status != Host.Status.UNREACHABLE
        if made:
            snapshot = Snapshot(
                owner_id=locked.owner_id,
                instance=locked,
                name=f"move to {new.name}"[:64],
                store=settings.GPUCLOUD_SNAPSHOT_STORE,
            )
            snapshot.object_key = f"snapshots/{int(locked.owner_id)}/{snapshot.public_id}.tar.zst"
            snapshot.save()
        else:
            found = _usable_snapshot(instance=locked)
            if found is None:
                raise MoveImpossible(
                    "The instance's host is unreachable and no snapshot taken since its last stop holds "
                    "its workspace: it can be moved when the host is back.",
                    detail={"reason": Host.Status.UNREACHABLE},
                )
            snapshot = found
        try:
            with transaction.atomic():
                move = InstanceMove.objects.create(
                    instance=locked, from_host=old, to_host=new, snapshot=snapshot, snapshot_made=made,
                    size_bytes=plan["size_bytes"],
                )  # fmt: skip
        except IntegrityError as exc:  # another request's move of it committed first
            raise MoveImpossible("A move of this workspace is under way.") from exc
        locked.last_error = ""  # a failed move's reason, from an earlier try
        locked.save(update_fields=["last_error", "updated_at"])
        event_add(
            instance=locked,
            kind=Kind.MOVE_REQUESTED,
            source=source,
            actor=actor,
            message=f"{old.name} → {new.name} ({plan['size_bytes'] / 2**20:.1f} MiB; the old host {_why(old)})",
            data={**plan, "snapshot": snapshot.public_id},
        )
        if made:
            _send(SNAPSHOT, queue=old.queue, move_id=move.pk)
        else:
            restore_request(move=move)
    return move


def restore_request(*, move: InstanceMove) -> bool:
    """The snapshot is stored: record the restore on the new host and send it there, in
    the caller's transaction. False when the move was past this step already."""
    if not InstanceMove.objects.filter(pk=move.pk, status__in=InstanceMove.ACTIVE, restore__isnull=True).update(
        status=InstanceMove.Status.RESTORING
    ):
        return False
    snapshot = Snapshot.objects.get(pk=move.snapshot_id)
    restore = SnapshotRestore.objects.create(
        snapshot=snapshot, instance_id=move.instance_id, total_bytes=snapshot.size_bytes or 0
    )
    InstanceMove.objects.filter(pk=move.pk).update(restore=restore)
    to_host = Host.objects.get(pk=move.to_host_id)
    event_add(
        instance=Instance.objects.get(pk=move.instance_id),
        kind=Kind.RESTORE_REQUESTED,
        source=Source.WORKER,
        message=f"restoring on {to_host.name}",
        data={"snapshot": snapshot.public_id, "move": move.pk},
    )
    _send(RESTORE, queue=to_host.queue, move_id=move.pk)
    return True


def move_fail(*, move: InstanceMove, reason: str) -> InstanceMove:
    """End the move `failed`: the instance stays stopped on its old host (its files there
    untouched) with the reason; the move's own snapshot is deleted."""
    with transaction.atomic():
        if InstanceMove.objects.filter(pk=move.pk, status__in=InstanceMove.ACTIVE).update(
            status=InstanceMove.Status.FAILED, last_error=reason[:2000], finished_at=timezone.now()
        ):
            # The restore's row too (a host lost mid-restore never finishes it): nothing
            # keeps the workspace busy after a failed move.
            SnapshotRestore.objects.filter(
                pk=move.restore.pk if move.restore else 0,
                status__in=(SnapshotRestore.Status.PENDING, SnapshotRestore.Status.RUNNING),
            ).update(status=SnapshotRestore.Status.FAILED, last_error=reason[:2000], finished_at=timezone.now())
            instance = Instance.objects.select_for_update(of=("self",)).get(pk=move.instance_id)
            instance.last_error = f"The move to another host failed: {reason}"[:2000]
            instance.save(update_fields=["last_error", "updated_at"])
            event_add(instance=instance, kind=Kind.MOVE_FAILED, source=Source.WORKER, message=reason)
            if move.snapshot_made:
                snapshot_delete(snapshot=Snapshot.objects.get(pk=move.snapshot_id), source=Source.WORKER)
    return InstanceMove.objects.get(pk=move.pk)


def move_done(*, move: InstanceMove) -> bool:
    """The new host holds the verified workspace: the instance is now on it. Then (on
    commit) the old copy is removed on the old host and the move's snapshot deleted.
    False when the instance changed meanwhile (the move is failed instead)."""
    with transaction.atomic():
        instance = Instance.objects.select_for_update(of=("self",)).get(pk=move.instance_id)
        if instance.status != Status.STOPPED or instance.host_id != move.from_host_id:
            return False
        if not InstanceMove.objects.filter(pk=move.pk, status=InstanceMove.Status.RESTORING).update(
            status=InstanceMove.Status.DONE, finished_at=timezone.now()
        ):
            return False
        instance.host_id, instance.last_error = move.to_host_id, ""
        instance.save(update_fields=["host", "last_error", "updated_at"])
        old, new = Host.objects.get(pk=move.from_host_id), Host.objects.get(pk=move.to_host_id)
        event_add(
            instance=instance,
            kind=Kind.MOVED,
            source=Source.WORKER,
            message=f"{old.name} → {new.name}",
            data={"from_host": old.name, "to_host": new.name, "size_bytes": move.size_bytes},
        )
        _send(CLEANUP, queue=old.queue, move_id=move.pk)
        if move.snapshot_made:
            snapshot_delete(snapshot=Snapshot.objects.get(pk=move.snapshot_id), source=Source.WORKER)
    return True


def moves_host_lost(*, host: Host, reason: str) -> list[int]:
    """`host` is unreachable: the moves it was working on fail now (a snapshot it was
    taking, a restore it was making), so their instances can start (or move) again
    instead of waiting for it; each stays stopped on its old host with its files. Its
    task, run when it returns, finds the move failed and does nothing (a restore's
    partial copy is then discarded). A done move's cleanup on it just waits. Call in the
    caller's transaction. Returns the ids of the moves failed."""
    lost = InstanceMove.objects.filter(
        Q(from_host=host, status=InstanceMove.Status.SNAPSHOTTING) | Q(to_host=host, status__in=InstanceMove.ACTIVE)
    )
    failed = []
    for move in lost.select_related("restore"):
        move_fail(move=move, reason=reason)
        failed.append(move.pk)
    return failed
