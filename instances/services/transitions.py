"""Stop, start, restart and destroy: what customers, operators and billing ask of an
instance. Each checks the transition first, changes the row in one transaction, and
enqueues the worker's task on the host's queue when that transaction commits. None
touches Docker: the worker does (instances.services.provision).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from instances.errors import InvalidTransition, MoveImpossible, SnapshotBusy
from instances.models import Instance, PortBinding, Snapshot
from instances.notify.models import Event
from instances.notify.services import notify
from instances.services import queue
from instances.services.backoff import start_backoff_check
from instances.services.events import Kind, Source, Status, event_add
from instances.services.launch import admission_lock, admit, gpu_memory_check, scheduled_data
from instances.services.move import instance_move, move_active, move_plan, move_required
from instances.services.scheduling import ALLOCATION_ATTEMPTS, gpu_take, no_capacity, ports_bind, published_ports
from instances.services.settle import credentials_erase, instance_settle
from instances.services.snapshots import RESTORING, snapshot_request, workspace_busy
from templates_app.models import Template


def _locked(instance: Instance) -> Instance:
    return Instance.objects.select_for_update(of=("self",)).select_related("host", "gpu").get(pk=instance.pk)


def _refuse(instance: Instance, action: str) -> InvalidTransition:
    return InvalidTransition(
        f"Cannot {action} an instance that is {instance.status}.",
        detail={"status": instance.status, "action": action},
    )


def instance_stop(
    *, instance: Instance, actor: Any = None, source: str = Source.USER, reason: str = "", code: str = ""
) -> Instance:
    """Ask the worker to stop a running instance (data kept, GPU released).

    Moves it to `stopping` and enqueues the stop. A stop the customer did not ask for
    (billing, `code` "idle" or "max-runtime") keeps its reason on the row and notifies
    the owner. Raises InvalidTransition unless running.
    """
    with transaction.atomic():
        locked = _locked(instance)
        if locked.status != Status.RUNNING:
            raise _refuse(locked, "stop")
        locked.status = Status.STOPPING
        if source == Source.BILLING:
            code = code or "billing"
            locked.stop_reason = (reason or "billing")[:64]
        elif code:
            locked.stop_reason = code[:64]
        locked.save(update_fields=["status", "stop_reason", "updated_at"])
        event_add(
            instance=locked,
            kind=Kind.STOP_REQUESTED,
            source=source,
            actor=actor,
            message=reason,
            data={"reason_code": code} if code else None,
        )
        queue.enqueue(queue.STOP, locked)
        if code:
            notify(
                user=locked.owner,
                event=Event.INSTANCE_STOPPED,
                data={"instance": locked.public_id, "reason_code": code, "reason": reason},
            )
    return locked


def instance_start(
    *, instance: Instance, actor: Any = None, source: str = Source.USER, reason: str = "", move: bool = False
) -> Instance:
    """Start a stopped (or failed) instance on a GPU of its type on its host (which
    keeps its workspace); it may be another GPU than before.

    When its host cannot take it (no free GPU of its type, draining, unreachable) and
    another can, a stopped instance moves there first (instances.services.move): without
    `move` that raises MoveRequired (with the workspace's size), with it the move
    begins and the instance is returned still `stopped` (it starts when moved).

    Raises InvalidTransition, StartBackoff (its last start ran a container that never
    became ready: 429 until the delay is over), GpuTooSmall (the template's minimum GPU
    memory was raised since the launch), an admission check's error, LockBusy (another
    launch or start of the owner's holds the admission lock), or NoCapacity.
    """
    if instance.status not in (Status.STOPPED, Status.FAILED) or instance.host_id is None:
        raise _refuse(instance, "start")
    if move_active(instance=instance):
        raise MoveImpossible("This instance is moving to another host: it starts when the move is done.")
    if workspace_busy(instance=instance):
        raise SnapshotBusy(detail={"id": instance.public_id})
    start_backoff_check(instance=instance, now=timezone.now())
    # Read the template again: an operator may have raised its minimum since this
    # instance (or the object in hand) was loaded.
    gpu_memory_check(template=Template.objects.get(pk=instance.template_id), gpu_type=instance.gpu_type)
    plan = move_plan(instance=instance)
    if plan is not None:
        if not move:
            raise move_required(plan)
        admit(user=instance.owner, gpu_type=instance.gpu_type, template=instance.template)
        instance_move(instance=instance, actor=actor, source=source)
        return Instance.objects.select_related("host").get(pk=instance.pk)
    with admission_lock(user=instance.owner):
        return _admit_and_start(instance=instance, actor=actor, source=source, reason=reason)


def _admit_and_start(*, instance: Instance, actor: Any, source: str, reason: str) -> Instance:
    """instance_start's admission and GPU allocation, under the owner's admission lock."""
    admit(user=instance.owner, gpu_type=instance.gpu_type, template=instance.template)
    ports = published_ports(template=instance.template, access=list(instance.access or []))
    for _ in range(ALLOCATION_ATTEMPTS):
        try:
            with transaction.atomic():
                locked = _locked(instance)
                if locked.status not in (Status.STOPPED, Status.FAILED):
                    raise _refuse(locked, "start")
                # Again on the locked row: the object in hand may predate the failure.
                start_backoff_check(instance=locked, now=timezone.now())
                host = locked.host
                if host is None:
                    raise _refuse(locked, "start")
                gpu = gpu_take(gpu_type=locked.gpu_type, host=host, template=locked.template)
                if gpu is None:
                    raise no_capacity(locked.gpu_type)
                PortBinding.objects.filter(instance=locked).delete()
                ports_bind(instance=locked, host=host, ports=ports)
                locked.gpu, locked.status, locked.last_error = gpu, Status.STARTING, ""
                locked.save(update_fields=["gpu", "status", "last_error", "updated_at"])
                event_add(
                    instance=locked,
                    kind=Kind.START_REQUESTED,
                    source=source,
                    actor=actor,
                    message=reason,
                    data=scheduled_data(locked),
                )
                queue.enqueue(queue.START, locked)
            return locked
        except IntegrityError:
            continue
    raise no_capacity(instance.gpu_type)


def instance_restart(*, instance: Instance, actor: Any = None, source: str = Source.USER, reason: str = "") -> Instance:
    """Restart a running instance's container on the same GPU and ports.

    The running segment ends when the old container stops and a new one begins when
    the new container starts (billed from then, ready or not). Raises
    InvalidTransition unless running.
    """
    with transaction.atomic():
        locked = _locked(instance)
        if locked.status != Status.RUNNING:
            raise _refuse(locked, "restart")
        locked.status = Status.STARTING
        locked.save(update_fields=["status", "updated_at"])
        event_add(instance=locked, kind=Kind.RESTART_REQUESTED, source=source, actor=actor, message=reason)
        queue.enqueue(queue.START, locked)
    return locked


def instance_destroy(*, instance: Instance, actor: Any = None, source: str = Source.USER, reason: str = "") -> Instance:
    """Destroy the instance: its container now, its workspace after the grace period.

    Moves it to `terminating` and enqueues the removal. Raises InvalidTransition when it
    is already terminating or terminated.
    """
    with transaction.atomic():
        locked = _locked(instance)
        if locked.status in (Status.TERMINATING, Status.TERMINATED):
            raise _refuse(locked, "destroy")
        locked.status = Status.TERMINATING
        credentials_erase(instance=locked)  # the container goes now; nothing secret stays behind
        locked.save(update_fields=["status", "password_encrypted", "access_token_encrypted", "env", "updated_at"])
        event_add(instance=locked, kind=Kind.DESTROY_REQUESTED, source=source, actor=actor, message=reason)
        if locked.host_id is not None:
            queue.enqueue(queue.DESTROY, locked)
    if locked.host_id is None:  # never scheduled: nothing exists on any host
        return instance_settle(instance_id=locked.pk, expected=(Status.TERMINATING,), status=Status.TERMINATED)
    return locked


# Instances whose workspace a destroy-and-keep may snapshot (the destroy stops the container).
_DESTROY_KEEPS = (Status.RUNNING, Status.STOPPED, Status.FAILED)


def instance_destroy_keeping_snapshot(
    *, instance: Instance, name: str = "", actor: Any = None, source: str = Source.USER
) -> tuple[Instance, Snapshot]:
    """Destroy the instance and snapshot its workspace in one action: the container goes
    first (the host's destroy task), then the snapshot task, which waits for it, reads
    the workspace that the grace period keeps (workspace_cleanup waits for the snapshot).

    Raises InvalidTransition when the instance has no workspace to keep, SnapshotBusy
    while a restore into it runs.
    """
    with transaction.atomic():
        locked = _locked(instance)
        if locked.status not in _DESTROY_KEEPS or locked.host is None:
            raise InvalidTransition(
                f"Cannot keep a snapshot of an instance that is {locked.status}.",
                detail={"status": locked.status, "action": "destroy-keep-snapshot"},
            )
        if locked.restores.filter(status__in=RESTORING).exists():
            raise SnapshotBusy(detail={"id": locked.public_id})
        destroyed = instance_destroy(instance=locked, actor=actor, source=source)  # its task is sent first
        return destroyed, snapshot_request(locked=locked, name=name or "kept at destroy", actor=actor, source=source)
