"""Customer- and operator-facing lifecycle services: validate, schedule, enqueue.

Each checks the transition first, changes the row in one transaction, and enqueues
the worker task on the host's queue when that transaction commits. None touches
Docker: the worker does (instances.services.worker).
"""

from __future__ import annotations

import random
import re
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from instances.crypto import encrypt
from instances.errors import (
    InvalidAccess,
    InvalidEnv,
    InvalidSSHKey,
    InvalidStorage,
    InvalidTransition,
    NoCapacity,
    QueueUnavailable,
    UnknownGpuType,
    UnknownTemplate,
)
from instances.models import Gpu, GpuType, Host, Instance, PortBinding
from instances.preflight import unschedulable_hosts
from instances.services.common import Kind, Source, Status, event_add, logger, release
from templates_app.models import Template

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV_PREFIXES = ("GPUCLOUD_", "NVIDIA_", "LD_")
_SSH_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [^\r\n]*)?$")
# Port names that are access methods of their own; any other port is reached as "http".
_NAMED_ACCESS = ("ssh", "jupyter", "code-server", "terminal")
_ALLOCATION_ATTEMPTS = 8


# -- validation -----------------------------------------------------------------------
def _template(template: Template | str) -> Template:
    slug = template.slug if isinstance(template, Template) else str(template)
    found = Template.objects.filter(slug=slug, enabled=True).first()
    if found is None:
        raise UnknownTemplate(detail={"template": slug})
    return found


def _gpu_type(gpu_type: GpuType | str) -> GpuType:
    sku = gpu_type.sku if isinstance(gpu_type, GpuType) else str(gpu_type)
    found = GpuType.objects.filter(sku=sku, enabled=True).first()
    if found is None:
        raise UnknownGpuType(detail={"gpu": sku})
    return found


def _check_storage(storage_gb: int) -> None:
    low, high = settings.GPUCLOUD_STORAGE_GB_MIN, settings.GPUCLOUD_STORAGE_GB_MAX
    if isinstance(storage_gb, bool) or not isinstance(storage_gb, int) or not low <= storage_gb <= high:
        raise InvalidStorage(f"Storage must be between {low} and {high} GB.", detail={"min": low, "max": high})


def _check_access(access: list[str], template: Template) -> list[str]:
    unknown = [a for a in access if a not in template.access_methods]
    if unknown:
        raise InvalidAccess(detail={"invalid": unknown, "allowed": list(template.access_methods)})
    return list(dict.fromkeys(access)) or list(template.access_methods)


def _check_env(env: dict[str, str] | None) -> dict[str, str]:
    env = env or {}
    if not isinstance(env, dict):
        raise InvalidEnv()
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name) or name.upper().startswith(_RESERVED_ENV_PREFIXES):
            raise InvalidEnv(f"{name!r} is not an allowed variable name.", detail={"name": str(name)})
        if not isinstance(value, str) or "\x00" in value or len(value) > 4096:
            raise InvalidEnv(f"The value of {name} must be a string.", detail={"name": name})
    return dict(env)


def _check_keys(keys: list[str] | None) -> list[str]:
    cleaned = [k.strip() for k in keys or []]
    for key in cleaned:
        if not _SSH_KEY.match(key):
            raise InvalidSSHKey(detail={"key": key[:40]})
    return cleaned


def _admit(*, user: Any, gpu_type: GpuType, template: Template) -> None:
    # Billing provides one (enough balance); its exception carries its own code/status.
    for path in settings.GPUCLOUD_ADMISSION_CHECKS:
        import_string(path)(user=user, gpu_type=gpu_type, template=template)


def _published_ports(*, template: Template, access: list[str]) -> list[dict[str, Any]]:
    """The template's ports the customer asked to reach: nothing else is published."""
    wanted = []
    for port in template.ports:
        method = port["name"] if port["name"] in _NAMED_ACCESS else port.get("protocol", "tcp")
        if method in access or method == "tcp":
            wanted.append(port)
    return wanted


# -- scheduling -----------------------------------------------------------------------
def availability() -> list[dict[str, Any]]:
    from instances.selectors import availability as _availability

    return _availability()


def _free_gpu(*, gpu_type: GpuType, host: Host | None = None) -> Gpu | None:
    """Lock a free enabled GPU of the type on an online host, skipping ones another
    transaction is taking; the partial unique constraint catches what slips past."""
    busy = Instance.objects.filter(status__in=Instance.GPU_HOLDING, gpu__isnull=False).values("gpu_id")
    candidates = (
        Gpu.objects.filter(gpu_type=gpu_type, enabled=True, host__status=Host.Status.ONLINE)
        .exclude(pk__in=busy)
        # A host whose runc / NVIDIA toolkit lacks escape fixes (instances.preflight) takes nothing.
        .exclude(host__in=unschedulable_hosts())
    )
    if host is not None:
        candidates = candidates.filter(host=host)
    return (
        candidates.select_related("host")
        .select_for_update(skip_locked=True, of=("self",))
        .order_by("host__name", "index")
        .first()
    )


def _bind_ports(*, instance: Instance, host: Host, ports: list[dict[str, Any]]) -> None:
    """Bind a random free host port per service; the unique constraint is the backstop."""
    used = set(PortBinding.objects.filter(host=host).values_list("host_port", flat=True))
    free = [p for p in range(host.port_range_start, host.port_range_end + 1) if p not in used]
    if len(free) < len(ports):
        raise NoCapacity("The host has no free ports left.", detail={"availability": availability()})
    # Random picks make two launches on one host rarely collide on a port.
    for port, host_port in zip(ports, random.sample(free, len(ports)), strict=True):
        PortBinding.objects.create(
            host=host,
            host_port=host_port,
            instance=instance,
            name=port["name"],
            container_port=int(port["port"]),
            protocol=port.get("protocol", "tcp"),
        )


def _no_capacity(gpu_type: GpuType) -> NoCapacity:
    return NoCapacity(
        f"No {gpu_type.display_name} is free right now.",
        detail={"gpu": gpu_type.sku, "availability": availability()},
    )


def _enqueue(task_name: str, instance: Instance, *, launch_source: str | None = None) -> None:
    """Send the worker's task once the row is committed.

    The broker can be down after the commit. A launch (`launch_source` set) then ends
    `failed` at once with its GPU and ports released, and QueueUnavailable (503) goes
    to the caller: no `pending` row is left holding a GPU the customer was told
    nothing about. Any other step stays in its in-between status, which the reconciler
    resends once the broker is back (housekeeping._resend_stuck), so it is only logged.
    """
    from instances import tasks

    task = getattr(tasks, task_name)
    host_queue = instance.host.queue
    instance_id, public_id = instance.pk, instance.public_id

    def send() -> None:
        try:
            task.apply_async(kwargs={"instance_id": instance_id}, queue=host_queue)
        except Exception as exc:  # kombu's OperationalError, redis' errors: the message is not queued
            logger.warning("instance %s: %s not queued: %s", public_id, task_name, type(exc).__name__)
            if launch_source is None:
                return
            _launch_abandon(instance_id=instance_id, source=launch_source)
            raise QueueUnavailable(detail={"id": public_id}) from exc

    transaction.on_commit(send)


def _launch_abandon(*, instance_id: int, source: str) -> None:
    """A launch whose task never reached the broker: `failed`, GPU and ports freed."""
    reason = "the task queue was unreachable; nothing was started"
    with transaction.atomic():
        locked = Instance.objects.select_for_update(of=("self",)).get(pk=instance_id)
        if locked.status != Status.PENDING:  # the message did get through and a worker took it
            return
        release(instance=locked)
        locked.status, locked.last_error = Status.FAILED, reason
        locked.save(update_fields=["gpu", "container_id", "status", "last_error", "updated_at"])
        event_add(instance=locked, kind=Kind.FAILED, source=source, message=reason)


def _scheduled_data(instance: Instance) -> dict[str, Any]:
    gpu = instance.gpu
    return {
        "host": instance.host.name,
        "gpu": gpu.uuid if gpu else "",
        "gpu_index": gpu.index if gpu else None,
        "simulated": gpu.simulated if gpu else None,
        "ports": {b.name: b.host_port for b in instance.ports.all()},
    }


# -- services -------------------------------------------------------------------------
def instance_launch(
    *,
    user: Any,
    template: Template | str,
    gpu_type: GpuType | str,
    storage_gb: int,
    access: list[str],
    name: str = "",
    ssh_public_keys: list[str] | None = None,
    ssh_password_auth: bool = True,
    env: dict[str, str] | None = None,
    actor: Any = None,
) -> Instance:
    """Validate, schedule a free GPU and ports, create the instance `pending`, and
    enqueue its provisioning on the host's queue.

    Raises UnknownTemplate, UnknownGpuType, InvalidStorage, InvalidAccess, InvalidEnv,
    InvalidSSHKey, an admission check's error, or NoCapacity (detail: availability);
    QueueUnavailable when the broker refuses the task after the commit (the instance is
    then `failed`, holding nothing).
    """
    template = _template(template)
    gpu_type = _gpu_type(gpu_type)
    _check_storage(storage_gb)
    access = _check_access(list(access or []), template)
    env = _check_env(env)
    keys = _check_keys(ssh_public_keys)
    _admit(user=user, gpu_type=gpu_type, template=template)
    fields = {
        "owner": user,
        "name": (name or "").strip()[:64],
        "template": template,
        "gpu_type": gpu_type,
        "storage_gb": storage_gb,
        "access": access,
        "ssh_public_keys": keys,
        "ssh_password_auth": bool(ssh_password_auth),
        "env": env,
        "password_encrypted": encrypt(secrets.token_urlsafe(18)),
        "access_token_encrypted": encrypt(secrets.token_urlsafe(24)),
    }
    ports = _published_ports(template=template, access=access)
    for _ in range(_ALLOCATION_ATTEMPTS):
        try:
            with transaction.atomic():
                gpu = _free_gpu(gpu_type=gpu_type)
                if gpu is None:
                    raise _no_capacity(gpu_type)
                instance = Instance.objects.create(gpu=gpu, host=gpu.host, status=Status.PENDING, **fields)
                _bind_ports(instance=instance, host=gpu.host, ports=ports)
                source = Source.OPERATOR if actor is not None and actor != user else Source.USER
                event_add(instance=instance, kind=Kind.CREATED, source=source, actor=actor or user)
                event_add(instance=instance, kind=Kind.SCHEDULED, source=source, data=_scheduled_data(instance))
                _enqueue("instance_provision", instance, launch_source=source)
            return instance
        except IntegrityError:
            # Another launch took this GPU or one of these ports first: try again.
            continue
    raise _no_capacity(gpu_type)


def _locked(instance: Instance) -> Instance:
    return Instance.objects.select_for_update(of=("self",)).select_related("host", "gpu").get(pk=instance.pk)


def _refuse(instance: Instance, action: str) -> InvalidTransition:
    return InvalidTransition(
        f"Cannot {action} an instance that is {instance.status}.",
        detail={"status": instance.status, "action": action},
    )


def instance_stop(*, instance: Instance, actor: Any = None, source: str = Source.USER, reason: str = "") -> Instance:
    """Ask the worker to stop a running instance (data kept, GPU released).

    Moves it to `stopping` and enqueues the stop. Raises InvalidTransition unless running.
    """
    with transaction.atomic():
        locked = _locked(instance)
        if locked.status != Status.RUNNING:
            raise _refuse(locked, "stop")
        locked.status = Status.STOPPING
        if source == Source.BILLING:
            locked.stop_reason = (reason or "billing")[:64]
        locked.save(update_fields=["status", "stop_reason", "updated_at"])
        event_add(instance=locked, kind=Kind.STOP_REQUESTED, source=source, actor=actor, message=reason)
        _enqueue("instance_stop_task", locked)
    return locked


def instance_start(*, instance: Instance, actor: Any = None, source: str = Source.USER, reason: str = "") -> Instance:
    """Start a stopped (or failed) instance on a GPU of its type on its host (which
    keeps its workspace); it may be another GPU than before.

    Raises InvalidTransition, an admission check's error, or NoCapacity.
    """
    if instance.status not in (Status.STOPPED, Status.FAILED) or instance.host_id is None:
        raise _refuse(instance, "start")
    _admit(user=instance.owner, gpu_type=instance.gpu_type, template=instance.template)
    ports = _published_ports(template=instance.template, access=list(instance.access or []))
    for _ in range(_ALLOCATION_ATTEMPTS):
        try:
            with transaction.atomic():
                locked = _locked(instance)
                if locked.status not in (Status.STOPPED, Status.FAILED):
                    raise _refuse(locked, "start")
                gpu = _free_gpu(gpu_type=locked.gpu_type, host=locked.host)
                if gpu is None:
                    raise _no_capacity(locked.gpu_type)
                PortBinding.objects.filter(instance=locked).delete()
                _bind_ports(instance=locked, host=locked.host, ports=ports)
                locked.gpu, locked.status, locked.last_error = gpu, Status.STARTING, ""
                locked.save(update_fields=["gpu", "status", "last_error", "updated_at"])
                event_add(
                    instance=locked,
                    kind=Kind.START_REQUESTED,
                    source=source,
                    actor=actor,
                    message=reason,
                    data=_scheduled_data(locked),
                )
                _enqueue("instance_start_task", locked)
            return locked
        except IntegrityError:
            continue
    raise _no_capacity(instance.gpu_type)


def instance_restart(*, instance: Instance, actor: Any = None, source: str = Source.USER, reason: str = "") -> Instance:
    """Restart a running instance's container on the same GPU and ports.

    The running segment ends when the old container stops and a new one begins when
    the new container answers. Raises InvalidTransition unless running.
    """
    with transaction.atomic():
        locked = _locked(instance)
        if locked.status != Status.RUNNING:
            raise _refuse(locked, "restart")
        locked.status = Status.STARTING
        locked.save(update_fields=["status", "updated_at"])
        event_add(instance=locked, kind=Kind.RESTART_REQUESTED, source=source, actor=actor, message=reason)
        _enqueue("instance_start_task", locked)
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
        locked.save(update_fields=["status", "updated_at"])
        event_add(instance=locked, kind=Kind.DESTROY_REQUESTED, source=source, actor=actor, message=reason)
        if locked.host_id is not None:
            _enqueue("instance_destroy_task", locked)
    if locked.host_id is None:  # never scheduled: nothing exists on any host
        from instances.services.worker import instance_destroy_execute

        return instance_destroy_execute(instance_id=locked.pk)
    return locked
