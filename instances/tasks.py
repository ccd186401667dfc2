"""Celery entry points of the instances app: load by id, call one service.

Host work runs on the host's queue (`host.<name>`); the periodic fan-outs run on
"default" and enqueue one task per host. Every task is safe to run twice (see
instances.services.provision), hence acks_late. Only InfrastructureError (Docker
unreachable, another task holding the instance) is retried, with backoff; a domain
error is final. Provisioning that runs out of retries ends `failed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings

from instances.errors import InfrastructureError, RuntimeFailure
from instances.host.gpus import xid_watch_start
from instances.host.heartbeat import HeartbeatTimer
from instances.host.preflight import host_preflight
from instances.host.runtime import runtime_for
from instances.models import Host, Instance
from instances.notify import tasks as notify_tasks  # noqa: F401 - registers the webhook task
from instances.services import (
    health,
    idle,
    launch_keys_purge,
    liveness,
    move_transfer,
    provision,
    reconcile,
    snapshot_transfer,
    upkeep,
    warm,
)
from instances.services.logs import logs_bound, logs_lines
from instances.services.waitlist import waitlist_grant

logger = logging.getLogger(__name__)

MAX_RETRIES = 8
HOST_TASK = {"bind": True, "acks_late": True, "reject_on_worker_lost": True, "max_retries": MAX_RETRIES}


def _backoff(retries: int) -> int:
    # 2, 4, 8 … 60 s: well under the broker's visibility timeout.
    return min(60, 2 ** (retries + 1))


def _run(task: Any, work: Callable[..., Instance], instance_id: int, *, give_up: str | None = None) -> str:
    try:
        return work(instance_id=instance_id).status
    except Instance.DoesNotExist:
        logger.warning("instance %s: no such row, nothing to do", instance_id)
        return "missing"
    except InfrastructureError as exc:
        if task.request.retries >= task.max_retries and give_up:
            logger.warning("instance %s: giving up after %s retries: %s", instance_id, task.max_retries, exc.code)
            return provision.instance_give_up(instance_id=instance_id, expected=give_up, reason=exc.message).status
        raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc


@shared_task(**HOST_TASK)
def instance_provision(self: Any, *, instance_id: int) -> str:
    return _run(self, provision.instance_provision, instance_id, give_up="provisioning")


@shared_task(**HOST_TASK)
def instance_start_task(self: Any, *, instance_id: int) -> str:
    return _run(self, provision.instance_start_execute, instance_id, give_up="starting")


@shared_task(**HOST_TASK)
def instance_stop_task(self: Any, *, instance_id: int) -> str:
    return _run(self, provision.instance_stop_execute, instance_id)


@shared_task(**HOST_TASK)
def instance_restart_task(self: Any, *, instance_id: int) -> str:
    # A restart is a start of a `starting` instance whose segment is still open.
    return _run(self, provision.instance_start_execute, instance_id, give_up="starting")


@shared_task(**HOST_TASK)
def instance_destroy_task(self: Any, *, instance_id: int) -> str:
    return _run(self, provision.instance_destroy_execute, instance_id)


@shared_task(bind=True, acks_late=True, max_retries=3)
def reconcile_host(self: Any, *, host_id: int) -> dict[str, Any]:
    host = Host.objects.get(pk=host_id)
    try:
        report = reconcile.host_reconcile(host=host)
    except InfrastructureError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    return {
        "skipped": report.skipped,
        "ended": report.instances_ended,
        "removed": report.containers_removed,
        "resumed": report.instances_resumed,
    }


@shared_task(ignore_result=False, acks_late=False)
def instance_logs_tail(*, instance_id: int, lines: int) -> dict[str, str]:
    """The tail of the container's output, read on its host for the web process, which
    waits for this result (instances.services.logs); bounded in lines and bytes. Not
    acks_late: a request whose worker died is not worth running again."""
    instance = Instance.objects.select_related("host").filter(pk=instance_id).first()
    if instance is None or instance.host is None:
        return {"logs": ""}
    try:
        text = runtime_for(host=instance.host).logs(instance.container_name, lines=logs_lines(lines))
    except InfrastructureError as exc:
        return {"error": exc.code}
    return {"logs": logs_bound(text)}


@shared_task(acks_late=True)
def gpu_metrics_host(*, host_id: int) -> int:
    return upkeep.gpu_metrics_refresh(host=Host.objects.get(pk=host_id))


@shared_task(acks_late=True)
def gpu_health_host(*, host_id: int) -> dict[str, Any]:
    """Read this host's GPUs and act on faults (instances.services.health)."""
    report = health.gpu_health_check(host=Host.objects.get(pk=host_id))
    return {"checked": report.checked, "quarantined": report.quarantined, "stopped": report.stopped}


@shared_task(acks_late=True)
def workspace_cleanup_host(*, host_id: int) -> list[str]:
    return upkeep.workspace_cleanup(host=Host.objects.get(pk=host_id))


@shared_task(acks_late=True)
def workspace_upkeep_host(*, host_id: int) -> dict[str, list[str]]:
    return upkeep.workspace_upkeep(host=Host.objects.get(pk=host_id))


def _fan_out(task: Any) -> int:
    # Not to an unreachable host: its queue would only pile up (liveness sends its
    # reconciler when it is back).
    hosts = list(Host.objects.exclude(status__in=(Host.Status.OFFLINE, Host.Status.UNREACHABLE)))
    for host in hosts:
        task.apply_async(kwargs={"host_id": host.pk}, queue=host.queue)
    return len(hosts)


@shared_task
def hosts_liveness() -> dict[str, Any]:
    """Judge every host's beats (on "default": any worker, never the host's own)."""
    report = liveness.hosts_liveness()
    return {"skipped": report.skipped, "unreachable": report.unreachable, "returned": report.returned}


@shared_task
def reconcile_all_hosts() -> int:
    return _fan_out(reconcile_host)


@shared_task
def gpu_metrics_all_hosts() -> int:
    return _fan_out(gpu_metrics_host)


@shared_task
def gpu_health_all_hosts() -> int:
    return _fan_out(gpu_health_host)


@shared_task
def workspace_cleanup_all_hosts() -> int:
    return _fan_out(workspace_cleanup_host)


@shared_task(acks_late=True)
def idle_check_host(*, host_id: int) -> dict[str, str]:
    """Idle stop and maximum runtime of this host's running instances (instances.services.idle)."""
    return idle.host_idle_check(host=Host.objects.get(pk=host_id))


@shared_task
def idle_check_all_hosts() -> int:
    return _fan_out(idle_check_host)


@shared_task
def workspace_upkeep_all_hosts() -> int:
    return _fan_out(workspace_upkeep_host)


@shared_task(acks_late=True)
def images_warm_host(*, host_id: int, template_ids: list[int] | None = None) -> dict[str, str]:
    """Pull the enabled templates' images this host lacks (admin action, and beat)."""
    return warm.host_images_warm(host=Host.objects.get(pk=host_id), template_ids=template_ids)


@shared_task
def images_warm_all_hosts() -> int:
    return _fan_out(images_warm_host)


@shared_task
def launch_keys_expire() -> int:
    return launch_keys_purge()


@shared_task
def waitlist_grant_all() -> int:
    """Launch waiting entries of the waitlist while GPUs of their type are free."""
    return waitlist_grant()


@shared_task(acks_late=True)
def preflight_host(*, host_id: int) -> bool:
    """Check this host's runc / NVIDIA toolkit (instances.host.preflight); False when it is refused."""
    return not host_preflight(host=Host.objects.get(pk=host_id)).blocked


@shared_task
def preflight_all_hosts() -> int:
    return _fan_out(preflight_host)


@worker_ready.connect
def _preflight_on_worker_start(sender: Any = None, **kwargs: Any) -> None:
    # A worker may start on a host whose runc or toolkit changed since its last check:
    # check again before it takes work (on its own queue, so the check runs on this host).
    host = Host.objects.filter(name=settings.GPUCLOUD_HOST_NAME).first()
    if host is not None:
        preflight_host.apply_async(kwargs={"host_id": host.pk}, queue=host.queue)
        # Workspaces left mounted by a worker that died are unmounted (a start mounts again).
        workspace_upkeep_host.apply_async(kwargs={"host_id": host.pk}, queue=host.queue)


@worker_process_init.connect
@worker_ready.connect
def _xid_watch_on_worker_start(sender: Any = None, **kwargs: Any) -> None:
    # NVML's XID events reach only event sets registered before them: each process that
    # runs health checks (every prefork child; the one process of a threads pool) opens
    # its own at start (no database here: a prefork child's connection is not yet its
    # own). Without NVML (simulated GPUs) this returns at once.
    xid_watch_start()


_heartbeat: HeartbeatTimer | None = None


@worker_ready.connect
def _heartbeat_on_worker_start(sender: Any = None, **kwargs: Any) -> None:
    # One timer per worker, in its main process: it beats while the worker lives.
    global _heartbeat
    if _heartbeat is None and settings.GPUCLOUD_HEARTBEAT_SECONDS > 0:
        name = settings.GPUCLOUD_HOST_NAME
        _heartbeat = HeartbeatTimer(
            beat=lambda: liveness.host_heartbeat(host_name=name), every=settings.GPUCLOUD_HEARTBEAT_SECONDS
        )
        _heartbeat.start()


# A snapshot or restore moves a whole workspace: longer than the lifecycle's limits allow,
# and still under the broker's visibility timeout (a longer task would be delivered twice).
TRANSFER_TASK = {
    **HOST_TASK,
    "soft_time_limit": settings.GPUCLOUD_SNAPSHOT_TIME_LIMIT_SECONDS,
    "time_limit": settings.GPUCLOUD_SNAPSHOT_TIME_LIMIT_SECONDS + 30,
}


@shared_task(**TRANSFER_TASK)
def snapshot_take_task(self: Any, *, snapshot_id: int) -> str:
    """Archive a workspace into the object store (instances.services.snapshot_transfer);
    an unreachable store is retried with backoff, then the snapshot is `failed`."""
    try:
        return snapshot_transfer.snapshot_take(snapshot_id=snapshot_id).status
    except InfrastructureError as exc:
        if self.request.retries >= self.max_retries:
            return snapshot_transfer.snapshot_give_up(snapshot_id=snapshot_id, reason=exc.message).status
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(**TRANSFER_TASK)
def snapshot_restore_task(self: Any, *, restore_id: int) -> str:
    """Restore a snapshot into a stopped instance's workspace."""
    try:
        return snapshot_transfer.restore_execute(restore_id=restore_id).status
    except InfrastructureError as exc:
        if self.request.retries >= self.max_retries:
            snapshot_transfer.restore_give_up(restore_id=restore_id, reason=exc.message)
            return "failed"
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(**HOST_TASK)
def snapshot_purge_task(self: Any, *, snapshot_id: int) -> bool:
    """Remove a deleted snapshot's object from the store (retried while it is down)."""
    try:
        return snapshot_transfer.snapshot_purge(snapshot_id=snapshot_id)
    except InfrastructureError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(**TRANSFER_TASK)
def instance_move_snapshot_task(self: Any, *, move_id: int) -> str:
    """A move's first step, on the old host (instances.services.move_transfer)."""
    try:
        return move_transfer.move_snapshot(move_id=move_id).status
    except InfrastructureError as exc:
        if self.request.retries >= self.max_retries:
            return move_transfer.move_give_up(move_id=move_id, reason=exc.message).status
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(**TRANSFER_TASK)
def instance_move_restore_task(self: Any, *, move_id: int) -> str:
    """A move's second step, on the new host: restore, then start it there."""
    try:
        return move_transfer.move_restore(move_id=move_id).status
    except InfrastructureError as exc:
        if self.request.retries >= self.max_retries:
            return move_transfer.move_give_up(move_id=move_id, reason=exc.message).status
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(**HOST_TASK)
def instance_move_cleanup_task(self: Any, *, move_id: int) -> bool:
    """A done move's old copy, removed on the old host (retried while it is busy)."""
    try:
        return move_transfer.move_cleanup(move_id=move_id)
    except (InfrastructureError, RuntimeFailure) as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
