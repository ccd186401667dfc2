"""The worker's side of the lifecycle: what the host's Celery worker does to its
Docker engine to provision, start, stop and destroy an instance.

Every function here is safe to run twice: it works under the instance's lock
(instance_lock), does nothing unless the row is in the status it expects, finds the
container by its deterministic name, and changes the row with the row lock held.
Docker is never called inside a transaction.
"""

from __future__ import annotations

import warnings
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.access.crypto import decrypt
from instances.access.exposure import exposure_sync
from instances.errors import InfrastructureError, InstanceError, NoHealthyGpu, RuntimeFailure
from instances.host.runtime import (
    LABEL_HOST,
    LABEL_INSTANCE,
    LABEL_OWNER,
    ContainerSpec,
    ContainerState,
    DockerRuntime,
    PortSpec,
    runtime_for,
)
from instances.host.workspaces import workspace_ensure, workspace_release
from instances.models import Instance
from instances.notify.models import Event
from instances.notify.services import notify
from instances.services.backoff import start_backoff_clear
from instances.services.events import (
    Kind,
    Source,
    Status,
    event_add,
    logger,
    segment_close,
    segment_is_open,
    segment_open,
)
from instances.services.health import gpu_gate
from instances.services.locks import instance_lock
from instances.services.pull import image_ensure
from instances.services.settle import instance_settle
from instances.services.snapshot_transfer import restore_fill, restore_finish, restore_pending_at_launch
from instances.services.upkeep import workspace_usage_record
from templates_app.validation import ALLOWED_CAPS

STOP_TIMEOUT_SECONDS = 10


def _password_env(password: str) -> dict[str, str]:
    """The root password as a SHA-512 crypt hash where possible, so `docker inspect`
    shows no plain password; the start script accepts either form."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # removed in Python 3.13: fall back to the plain form there

        return {"GPUCLOUD_ROOT_PASSWORD_HASH": crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))}
    except ImportError:
        return {"GPUCLOUD_ROOT_PASSWORD": password}


def container_spec(*, instance: Instance, workspace: str) -> ContainerSpec:
    """The container of `instance`: hardened, pinned to its GPU, its ports on the
    host's bind address, its workspace the only host path."""
    template, gpu, host, gpu_type = instance.template, instance.gpu, instance.host, instance.gpu_type
    if gpu is None or host is None:
        raise RuntimeFailure("the instance holds no GPU on a host")
    refused = sorted(set(template.cap_add or []) - ALLOWED_CAPS)
    if refused:
        # The last line behind templates_app.validation: a row written around the API and
        # the admin (SQL, a shell, an old row) still hands no container a way out.
        raise RuntimeFailure(f"the template adds capabilities outside the allow-list: {', '.join(refused)}")
    env = {str(k): str(v) for k, v in (template.env or {}).items()}
    env.update(instance.env or {})
    env.update(_password_env(decrypt(instance.password_encrypted)))
    env.update(
        {
            "GPUCLOUD_AUTHORIZED_KEYS": "\n".join(instance.ssh_public_keys or []),
            "GPUCLOUD_SSH_PASSWORD_AUTH": "yes" if instance.ssh_password_auth else "no",
            "GPUCLOUD_JUPYTER_TOKEN": decrypt(instance.access_token_encrypted),
            "GPUCLOUD_INSTANCE_ID": instance.public_id,
        }
    )
    if gpu.simulated:
        # No device request (no NVIDIA runtime needed); the index stands in for the GPU.
        env["NVIDIA_VISIBLE_DEVICES"] = str(gpu.index)
    return ContainerSpec(
        name=instance.container_name,
        image=template.image,
        command=list(template.command) or None,
        labels={LABEL_INSTANCE: instance.public_id, LABEL_OWNER: str(instance.owner_id), LABEL_HOST: host.name},
        env=env,
        workspace=workspace,
        workspace_path=template.volume_path or "/workspace",
        bind_address=host.bind_address,
        ports=[PortSpec(container_port=b.container_port, host_port=b.host_port) for b in instance.ports.all()],
        cap_add=list(template.cap_add or []),
        cpu_limit=float(gpu_type.cpu_limit),
        memory_mb=int(gpu_type.ram_limit_mb),
        pids_limit=settings.GPUCLOUD_PIDS_LIMIT,
        gpu_uuid=None if gpu.simulated else gpu.uuid,
        disk_gb=settings.GPUCLOUD_CONTAINER_DISK_GB,
        shm_size_mb=template.shm_size_mb or max(64, int(gpu_type.ram_limit_mb) // 2),
    )


def health_paths(*, instance: Instance) -> dict[int, str]:
    """The template's health path on each of the instance's HTTP ports."""
    path = instance.template.health_path
    if not path:
        return {}
    http = {p.get("port") for p in instance.template.ports if p.get("protocol") == "http"}
    return {b.container_port: path for b in instance.ports.all() if b.container_port in http}


def ready_timeout_seconds(*, instance: Instance) -> int:
    """The template's own wait for its ports (models take minutes to load), else the host's."""
    return instance.template.ready_timeout_seconds or settings.GPUCLOUD_READY_TIMEOUT_SECONDS


def _load(instance_id: int) -> Instance:
    return Instance.objects.select_related("host", "gpu", "gpu_type", "template").get(pk=instance_id)


def _locked(instance_id: int) -> Instance:
    return Instance.objects.select_for_update(of=("self",)).select_related("host", "gpu").get(pk=instance_id)


def _bring_up(*, instance: Instance, expected: str, runtime: DockerRuntime) -> Instance:
    """Make the container, open its GPU segment as soon as it runs, wait for its ports,
    mark it running; on any refusal remove what was made and mark it failed, the
    segment closed at the removal (so a start that never answers is charged too)."""
    ran = False
    try:
        # The GPU's health first: a sick one is quarantined and another taken.
        instance = gpu_gate(instance=instance, expected=expected)
        if instance.status != expected:
            return instance
        workspace = workspace_ensure(instance=instance)
        image_ensure(instance=instance, runtime=runtime)  # before the container: a pull is never billed
        state = runtime.run(container_spec(instance=instance, workspace=str(workspace)))
        ran = True
        _billing_begin(instance_id=instance.pk, expected=expected, state=state)
        ports = [b.container_port for b in instance.ports.all()]
        runtime.wait_ready(
            container_id=state.id,
            ports=ports,
            timeout_seconds=ready_timeout_seconds(instance=instance),
            health_paths=health_paths(instance=instance),
        )
    except NoHealthyGpu as exc:
        return instance_settle(
            instance_id=instance.pk, expected=(expected,), status=Status.FAILED, reason=exc.message, code=exc.code
        )
    except RuntimeFailure as exc:
        runtime.remove(instance.container_name)
        workspace_release(instance=instance)
        # finished_at None: the segment ends now, after the removal, when the GPU is free.
        return instance_settle(
            instance_id=instance.pk, expected=(expected,), status=Status.FAILED, reason=exc.message, failed_start=ran
        )
    with transaction.atomic():
        locked = _locked(instance.pk)
        if locked.status != expected:  # destroyed meanwhile: the destroy task removes it
            return locked
        locked.status, locked.container_id, locked.last_error, locked.stop_reason = Status.RUNNING, state.id, "", ""
        start_backoff_clear(instance=locked)
        locked.save(
            update_fields=[
                "status",
                "container_id",
                "last_error",
                "stop_reason",
                "failed_starts",
                "start_not_before",
                "updated_at",
            ]
        )
        notify(
            user=locked.owner,
            event=Event.INSTANCE_RUNNING,
            data={"instance": locked.public_id, "template": instance.template.slug, "gpu_type": instance.gpu_type.sku},
        )
    logger.info("instance %s running in %s", locked.public_id, state.id[:12])
    exposure_sync(instance=locked, publish=True)
    return locked


def _billing_begin(*, instance_id: int, expected: str, state: ContainerState) -> None:
    """The container runs, so its GPU is in use: open the billed segment now, at the
    container's start, not when its ports first answer (a workspace that keeps one
    service from answering would otherwise use the GPU for the whole wait unbilled).

    Under the row lock; no second `started` when a segment is already open (this task
    delivered again after an earlier attempt opened it).
    """
    with transaction.atomic():
        locked = _locked(instance_id)
        locked.container_id = state.id
        # `terminating`: destroyed meanwhile; the destroy task (which waits for this
        # task's instance lock) stops the container and closes the segment.
        if locked.status in (expected, Status.TERMINATING) and not segment_is_open(locked):
            gpu = locked.gpu.uuid if locked.gpu else ""
            segment_open(
                instance=locked, at=state.started_at or timezone.now(), source=Source.WORKER, data={"gpu": gpu}
            )
        locked.save(update_fields=["container_id", "started_at", "updated_at"])


def _take_down(*, instance: Instance, runtime: DockerRuntime) -> datetime | None:
    """Stop (gracefully) and remove the container and its network, unmount the
    workspace (its files stay); the container's finish time."""
    state = runtime.stop(instance.container_name, timeout_seconds=STOP_TIMEOUT_SECONDS)
    runtime.remove(instance.container_name, network=instance.container_name)
    workspace_usage_record(instance=instance)  # what a stopped instance shows
    workspace_release(instance=instance)
    return state.finished_at if state is not None else None


def instance_provision(*, instance_id: int, runtime: DockerRuntime | None = None) -> Instance:
    """Provision a pending instance: workspace, container (billed from its start), ports
    answering → running.

    Any refusal ends it `failed` with the reason, its GPU and ports released and no
    container left. Raises InfrastructureError (retried) when Docker is unreachable.
    """
    with instance_lock(instance_id=instance_id):
        instance = _load(instance_id)
        if instance.status == Status.PENDING:
            with transaction.atomic():
                if not Instance.objects.filter(pk=instance_id, status=Status.PENDING).update(
                    status=Status.PROVISIONING, updated_at=timezone.now()
                ):
                    return _load(instance_id)
                event_add(instance=instance, kind=Kind.PROVISIONING, source=Source.WORKER)
            instance.status = Status.PROVISIONING
        if instance.status != Status.PROVISIONING:
            return instance  # already running, failed, or destroyed: nothing to do
        refused = _restore_at_launch(instance=instance)
        if refused is not None:
            return refused
        return _bring_up(
            instance=instance, expected=Status.PROVISIONING, runtime=runtime_for(host=instance.host, runtime=runtime)
        )


def _restore_at_launch(*, instance: Instance) -> Instance | None:
    """Fill a new workspace from the launch's snapshot before its container exists; the
    instance `failed` (returned) when the snapshot is refused (a checksum mismatch)."""
    restore = restore_pending_at_launch(instance=instance)
    if restore is None:
        return None
    try:
        restore_fill(restore=restore, instance=instance)  # InfrastructureError: the task retries
    except InfrastructureError:
        raise
    except InstanceError as exc:
        restore_finish(restore=restore, instance=instance, error=exc)
        return instance_settle(
            instance_id=instance.pk, expected=(Status.PROVISIONING,), status=Status.FAILED, reason=exc.message,
            code=exc.code,
        )  # fmt: skip
    restore_finish(restore=restore, instance=instance)
    return None


def instance_start_execute(*, instance_id: int, runtime: DockerRuntime | None = None) -> Instance:
    """Bring a `starting` instance up (a start, or a restart of a running one).

    A restart first stops the old container and ends its segment at its finish time.
    """
    with instance_lock(instance_id=instance_id):
        instance = _load(instance_id)
        if instance.status != Status.STARTING:
            return instance
        runtime = runtime_for(host=instance.host, runtime=runtime)
        if segment_is_open(instance):
            finished_at = _take_down(instance=instance, runtime=runtime)
            with transaction.atomic():
                locked = _locked(instance_id)
                segment_close(instance=locked, at=finished_at, source=Source.WORKER, reason="restart")
                locked.save(update_fields=["stopped_at", "updated_at"])
        return _bring_up(instance=instance, expected=Status.STARTING, runtime=runtime)


def instance_stop_execute(*, instance_id: int, runtime: DockerRuntime | None = None) -> Instance:
    """Stop a `stopping` instance: container stopped and removed (the workspace stays),
    segment ended at the container's finish time, GPU and ports released."""
    with instance_lock(instance_id=instance_id):
        instance = _load(instance_id)
        if instance.status != Status.STOPPING:
            return instance
        finished_at = _take_down(instance=instance, runtime=runtime_for(host=instance.host, runtime=runtime))
        return instance_settle(
            instance_id=instance_id, expected=(Status.STOPPING,), status=Status.STOPPED, finished_at=finished_at
        )


def instance_destroy_execute(*, instance_id: int, runtime: DockerRuntime | None = None) -> Instance:
    """Destroy a `terminating` instance: container and network removed, segment ended,
    GPU and ports released. The workspace goes later (workspace_cleanup)."""
    with instance_lock(instance_id=instance_id):
        instance = _load(instance_id)
        if instance.status != Status.TERMINATING:
            return instance
        finished_at = None
        if instance.host is not None:
            finished_at = _take_down(instance=instance, runtime=runtime_for(host=instance.host, runtime=runtime))
        return instance_settle(
            instance_id=instance_id, expected=(Status.TERMINATING,), status=Status.TERMINATED, finished_at=finished_at
        )


def instance_give_up(*, instance_id: int, expected: str, reason: str) -> Instance:
    """End an instance stuck in `expected` (the engine never answered) as `failed`.

    Its GPU and ports are released; a container left behind is the reconciler's.
    """
    return instance_settle(
        instance_id=instance_id,
        expected=(expected,),
        status=Status.FAILED,
        reason=f"the host's container engine did not answer: {reason}",
    )
