"""Reconciliation of one host, level-driven: make its rows and its containers agree.
Correct when a run is skipped or repeated."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.access.exposure import exposure_sync
from instances.host.runtime import LABEL_HOST, LABEL_INSTANCE, ContainerState, DockerRuntime, runtime_for
from instances.host.workspaces import workspace_release
from instances.models import Host, Instance, PortBinding
from instances.services import queue
from instances.services.events import (
    CONTAINER_STATUSES,
    Kind,
    Source,
    Status,
    event_add,
    logger,
    release,
    segment_close,
    segment_is_open,
    segment_open,
)
from instances.services.locks import instance_lock_held, lock_acquire, lock_release
from instances.services.outage import outage_leftovers_resume, outage_paused_storage, storage_resume


@dataclass
class ReconcileReport:
    host: str
    skipped: bool = False
    containers_removed: list[str] = field(default_factory=list)
    instances_ended: list[str] = field(default_factory=list)
    instances_resumed: list[str] = field(default_factory=list)
    storage_resumed: list[str] = field(default_factory=list)
    gpus_released: int = 0
    ports_released: int = 0
    networks_removed: list[str] = field(default_factory=list)
    tasks_resent: list[str] = field(default_factory=list)


# The worker task that moves an instance out of each in-between status.
_TASK_FOR_STATUS: dict[str, str] = {
    Status.PENDING: queue.PROVISION,
    Status.PROVISIONING: queue.PROVISION,
    Status.STARTING: queue.START,
    Status.STOPPING: queue.STOP,
    Status.TERMINATING: queue.DESTROY,
}


def _end_dead(*, instance: Instance, state: ContainerState | None) -> bool:
    """A `running` row whose container is gone or not running: close its segment at the
    container's finish time and record why. False when the row moved on meanwhile."""
    if state is None:
        status, reason, finished_at = Status.FAILED, "the container disappeared", None
    elif state.exit_code == 0 and not state.oom_killed:
        status, reason, finished_at = Status.STOPPED, "the container exited on its own", state.finished_at
    else:
        status, reason, finished_at = Status.FAILED, state.exit_reason, state.finished_at
    with transaction.atomic():
        locked = Instance.objects.select_for_update(of=("self",)).get(pk=instance.pk)
        # Conditional on `running`: a stop or restart requested since is the worker's.
        if locked.status != Status.RUNNING:
            return False
        # Closed already when its host's outage ended it at the host's last beat.
        billed_until_outage = not segment_is_open(locked)
        segment_close(instance=locked, at=finished_at, source=Source.RECONCILER, reason=reason)
        release(instance=locked)
        locked.status = status
        if status == Status.FAILED:
            locked.last_error = reason
        locked.save()
        kind = Kind.FAILED if status == Status.FAILED else Kind.STOPPED
        event_add(instance=locked, kind=kind, source=Source.RECONCILER, message=reason)
        if billed_until_outage and outage_paused_storage(locked):
            storage_resume(instance=locked, at=timezone.now())
    return True


def _seen_running_again(*, instance: Instance, host: Host) -> bool:
    """A `running` row whose segment its host's outage closed, and whose container runs:
    billed again from now, when it is seen running. Not while the host is still marked
    unreachable (its beats have not resumed: the liveness job decides). False when the
    row moved on meanwhile."""
    with transaction.atomic():
        if Host.objects.filter(pk=host.pk, status=Host.Status.UNREACHABLE).exists():
            return False
        locked = Instance.objects.select_for_update(of=("self",)).select_related("gpu").get(pk=instance.pk)
        if locked.status != Status.RUNNING or segment_is_open(locked):
            return False
        segment_open(
            instance=locked,
            at=timezone.now(),
            source=Source.RECONCILER,
            data={"gpu": locked.gpu.uuid if locked.gpu else "", "after_outage": True},
        )
        locked.save(update_fields=["started_at", "updated_at"])
        event_add(
            instance=locked,
            kind=Kind.RECONCILED,
            source=Source.RECONCILER,
            message="seen running again after its host's outage: billed again from now",
        )
    return True


def host_reconcile(*, host: Host, runtime: DockerRuntime | None = None) -> ReconcileReport:
    """Make the rows of `host` and the containers labelled with its name agree.

    Dead container under a `running` row → row failed/stopped at its finish time;
    labelled container with no row that may have one → removed; GPU or ports held by a
    row that holds none → released. Holds a lock: two runs never overlap (a second is
    skipped). Raises InfrastructureError when Docker is unreachable.
    """
    report = ReconcileReport(host=host.name)
    held = lock_acquire(name=f"reconcile:{host.name}")
    if held is None:
        report.skipped = True
        return report
    try:
        _reconcile(host=host, runtime=runtime_for(host=host, runtime=runtime), report=report)
    finally:
        lock_release(held=held)
    if any((report.containers_removed, report.instances_ended, report.gpus_released, report.ports_released,
            report.tasks_resent, report.instances_resumed)):  # fmt: skip
        logger.info("reconciled %s: %s", host.name, report)
    return report


def _reconcile(*, host: Host, runtime: DockerRuntime, report: ReconcileReport) -> None:
    # List the containers before reading rows: a row is then never older than the
    # listing, so a container made after the listing is never taken for a stray.
    containers = runtime.list(labels={LABEL_HOST: host.name})
    by_instance = {c.labels.get(LABEL_INSTANCE, ""): c for c in containers}
    rows = {i.public_id: i for i in Instance.objects.filter(public_id__in=list(by_instance), host=host)}
    for public_id, container in by_instance.items():
        row = rows.get(public_id)
        if row is None or row.status not in CONTAINER_STATUSES:
            # By id, not name: a start since the listing may have made a new one.
            runtime.remove(container.id, network=container.name)
            report.containers_removed.append(container.name)

    for instance in Instance.objects.filter(host=host, status=Status.RUNNING):
        state = runtime.inspect(instance.container_name)  # fresh: the listing may be stale
        if state is not None and state.running:
            if not segment_is_open(instance) and _seen_running_again(instance=instance, host=host):
                report.instances_resumed.append(instance.public_id)
            continue
        if _end_dead(instance=instance, state=state):
            runtime.remove(instance.container_name, network=instance.container_name)
            workspace_release(instance=instance)
            report.instances_ended.append(instance.public_id)
            exposure_sync(instance=instance, publish=False)

    resting = Instance.objects.filter(host=host).exclude(status__in=CONTAINER_STATUSES).exclude(status=Status.PENDING)
    report.gpus_released = resting.filter(gpu__isnull=False).exclude(status__in=Instance.GPU_HOLDING).update(gpu=None)
    report.ports_released, _ = PortBinding.objects.filter(host=host, instance__in=resting).delete()

    _resend_stuck(host=host, report=report)
    report.storage_resumed = outage_leftovers_resume(host=host, at=timezone.now())

    live = set(Instance.objects.filter(host=host, status__in=CONTAINER_STATUSES).values_list("public_id", flat=True))
    listed = {c.name for c in containers}
    for network in runtime.networks(labels={LABEL_HOST: host.name}):
        if network.removeprefix("gpucloud-") not in live and network not in listed:
            runtime.remove_network(network)
            report.networks_removed.append(network)


def _resend_stuck(*, host: Host, report: ReconcileReport) -> None:
    """Send the task again for a row stuck in an in-between status with no task working
    on it (its message was lost, or its worker was killed and Redis would redeliver
    only after the visibility timeout). Tasks are idempotent, so a duplicate is harmless."""
    now = timezone.now()
    stuck_after = timedelta(seconds=2 * settings.GPUCLOUD_READY_TIMEOUT_SECONDS + 60)
    stuck = Instance.objects.filter(host=host, status__in=list(_TASK_FOR_STATUS), updated_at__lt=now - stuck_after)
    for instance in stuck:
        if instance_lock_held(instance_id=instance.pk):
            continue  # a task is on it right now
        # Claim by moving updated_at: one resend per period even if two runs race.
        if Instance.objects.filter(pk=instance.pk, updated_at=instance.updated_at).update(updated_at=now):
            queue.task_send(_TASK_FOR_STATUS[instance.status], instance_id=instance.pk, queue=host.queue)
            event_add(
                instance=instance,
                kind=Kind.RECONCILED,
                source=Source.RECONCILER,
                message=f"{instance.status} for too long: its task was sent again",
            )
            report.tasks_resent.append(instance.public_id)
