"""Idle stop and maximum runtime, applied on each host by its worker (beat fans out
`instances.tasks.idle_check_host` every GPUCLOUD_IDLE_CHECK_SECONDS).

An instance is active when, at a check, its GPU's utilization is at or above the
rule's threshold (NVML on real GPUs; the value set for a simulated one), or anything
is connected to one of its services (ESTABLISHED sockets in the container's network
namespace, read from /proc on the host: SSH, Jupyter, terminal, code-server), or its
Jupyter reports a busy kernel or kernel activity since the last check. Idle time counts from
the latest of: the start, the last activity seen, the end of a keep-alive. A warning
(timeline, notification) goes out GPUCLOUD_IDLE_WARNING_SECONDS before the stop (half
the window for short windows); the stop keeps the data and says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from gpucloud.errors import DomainError
from instances.access.crypto import decrypt
from instances.errors import InfrastructureError
from instances.host import activity, gpus
from instances.host.runtime import DockerRuntime, runtime_for
from instances.idle_models import InstanceWatch
from instances.models import Host, Instance
from instances.notify.models import Event
from instances.notify.services import notify
from instances.services.events import Kind, Source, Status, event_add
from instances.services.idle_rules import (
    Rules,
    idle_deadline,
    rules_for,
    runtime_deadline,
    warning_lead_seconds,
    watch_of,
)
from instances.services.transitions import instance_stop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measure:
    gpu_percent: int | None
    connections: int
    jupyter_busy: int = 0
    jupyter_last_activity: datetime | None = None


def _real_utilization(instances: list[Instance]) -> dict[str, int | None]:
    if all(i.gpu is None or i.gpu.simulated for i in instances):
        return {}
    try:
        return {m.uuid: m.utilization_percent for m in gpus.nvml_metrics()}
    except gpus.GpuInventoryError as exc:
        logger.warning("no GPU utilization for the idle check: %s", exc)
        return {}


def measure(*, instance: Instance, runtime: DockerRuntime, real: dict[str, int | None]) -> Measure | None:
    """What the host sees of the instance's activity now; None when its container is not running."""
    state = runtime.inspect(instance.container_name)
    if state is None or not state.running or not state.pid:
        return None
    gpu = instance.gpu
    if gpu is None:
        percent = None
    elif gpu.simulated:
        percent = gpus.simulated_utilization(directory=settings.GPUCLOUD_SIMULATED_UTILIZATION_DIR, uuid=gpu.uuid)
    else:
        percent = real.get(gpu.uuid)
    bindings = list(instance.ports.all())
    connections = activity.established_connections(pid=state.pid, ports={b.container_port for b in bindings})
    jupyter = next((b for b in bindings if b.name == "jupyter"), None)
    status = None
    if jupyter is not None and instance.access_token_encrypted:
        status = activity.jupyter_status(
            base_url=f"http://{instance.host.bind_address if instance.host else '127.0.0.1'}:{jupyter.host_port}",
            token=decrypt(instance.access_token_encrypted),
        )
    return Measure(
        gpu_percent=percent,
        connections=connections,
        jupyter_busy=status.busy_kernels if status else 0,
        jupyter_last_activity=status.last_activity if status else None,
    )


def _is_active(m: Measure, rules: Rules, watch: InstanceWatch) -> bool:
    if m.gpu_percent is not None and m.gpu_percent >= rules.gpu_threshold_percent:
        return True
    if m.connections or m.jupyter_busy:
        return True
    last = watch.last_active_at or watch.measured_at
    return m.jupyter_last_activity is not None and (last is None or m.jupyter_last_activity > last)


def _warn(
    *, instance: Instance, watch: InstanceWatch, kind: str, deadline: datetime, now: datetime, rules: Rules
) -> None:
    field = "idle_warned_for" if kind == Kind.IDLE_WARNING else "runtime_warned_for"
    # Claimed by a conditional update: two overlapping checks warn once per deadline.
    if not InstanceWatch.objects.filter(pk=watch.pk).exclude(**{field: deadline}).update(**{field: deadline}):
        return
    seconds_left = max(0, int((deadline - now).total_seconds()))
    data = {
        "instance": instance.public_id,
        "seconds_left": seconds_left,
        "stop_at": deadline.strftime("%Y-%m-%d %H:%M:%S"),
        "gpu_threshold_percent": rules.gpu_threshold_percent,
    }
    if kind == Kind.IDLE_WARNING:
        message = f"Idle: stops in {seconds_left} s unless used or kept alive."
        event = Event.IDLE_WARNING
    else:
        message = f"Maximum runtime: stops in {seconds_left} s."
        event = Event.RUNTIME_WARNING
    event_add(instance=instance, kind=kind, source=Source.WORKER, message=message, data=data)
    notify(user=instance.owner, event=event, data=data)


def _stop(*, instance: Instance, code: str, reason: str) -> bool:
    try:
        instance_stop(instance=instance, source=Source.WORKER, reason=reason, code=code)
    except DomainError as exc:  # stopped or destroyed meanwhile
        logger.info("%s stop of %s refused: %s", code, instance.public_id, exc.code)
        return False
    return True


def instance_idle_check(
    *, instance: Instance, runtime: DockerRuntime, real: dict[str, int | None], now: datetime
) -> str:
    """Measure one running instance, record it, warn or stop it. Returns what was done."""
    watch = watch_of(instance)
    rules = rules_for(instance, watch)
    if not rules.idle_seconds and not rules.max_runtime_seconds:
        return "no-rules"
    m = measure(instance=instance, runtime=runtime, real=real)
    if m is None:
        return "not-running"  # the reconciler deals with it
    active = _is_active(m, rules, watch)
    watch.measured_at, watch.gpu_percent, watch.connections = now, m.gpu_percent, m.connections
    watch.activity = {"jupyter_busy_kernels": m.jupyter_busy, "active": active}
    fields = ["measured_at", "gpu_percent", "connections", "activity"]
    if active:
        watch.last_active_at, watch.idle_warned_for = now, None
        fields += ["last_active_at", "idle_warned_for"]
    watch.save(update_fields=fields)

    deadline = runtime_deadline(instance=instance, rules=rules)
    if deadline is not None:
        if now >= deadline:
            reason = f"maximum runtime of {rules.max_runtime_seconds} s reached"
            return "stopped:max-runtime" if _stop(instance=instance, code="max-runtime", reason=reason) else "refused"
        if now >= deadline - _lead(rules.max_runtime_seconds):
            _warn(instance=instance, watch=watch, kind=Kind.RUNTIME_WARNING, deadline=deadline, now=now, rules=rules)
    deadline = idle_deadline(instance=instance, watch=watch, rules=rules)
    if deadline is None or active:
        return "active" if active else "watched"
    if now >= deadline:
        reason = f"idle for {rules.idle_seconds} s (GPU under {rules.gpu_threshold_percent}%, nothing connected)"
        return "stopped:idle" if _stop(instance=instance, code="idle", reason=reason) else "refused"
    if now >= deadline - _lead(rules.idle_seconds):
        _warn(instance=instance, watch=watch, kind=Kind.IDLE_WARNING, deadline=deadline, now=now, rules=rules)
        return "warned"
    return "idle"


def _lead(window_seconds: int) -> timedelta:
    return timedelta(seconds=warning_lead_seconds(window_seconds))


def host_idle_check(*, host: Host, runtime: DockerRuntime | None = None) -> dict[str, str]:
    """Check every running instance of this host. {public id: what was done}."""
    runtime = runtime_for(host=host, runtime=runtime)
    instances = list(
        Instance.objects.filter(host=host, status=Status.RUNNING).select_related(
            "gpu", "host", "owner", "template", "gpu_type"
        )
    )
    real = _real_utilization(instances)
    done = {}
    for instance in instances:
        try:
            done[instance.public_id] = instance_idle_check(
                instance=instance, runtime=runtime, real=real, now=timezone.now()
            )
        except InfrastructureError as exc:
            logger.warning("idle check of %s: %s", instance.public_id, exc.code)
            done[instance.public_id] = "error"
    return done
