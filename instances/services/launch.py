"""Launching an instance: validate what the customer asked for, take a free GPU and
host ports, create the row `pending`, and hand it to the host's worker on commit."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from instances import selectors
from instances.access.crypto import encrypt
from instances.errors import (
    GpuTooSmall,
    IdempotencyKeyReused,
    InvalidAccess,
    InvalidEnv,
    InvalidSSHKey,
    InvalidStorage,
    UnknownGpuType,
    UnknownTemplate,
)
from instances.models import GpuType, Instance, LaunchKey
from instances.services import queue
from instances.services.events import Kind, Source, Status, event_add
from instances.services.locks import lock_hold
from instances.services.scheduling import ALLOCATION_ATTEMPTS, gpu_take, no_capacity, ports_bind, published_ports
from instances.services.snapshots import restore_at_launch, snapshot_check_fits, snapshot_get
from templates_app.models import Template
from templates_app.validation import ENV_NAME, env_name_reserved

# A customer's variables reach every process of the container, the image's own services
# (sshd's start script, Jupyter) included. Refused: what a template may not set either
# (templates_app.validation: the platform's names, the loader's and interpreters' hooks),
# and, for customers, every other variable that makes an interpreter or a service run
# code it was not asked to (a start-up file, a module path, injected options, a config
# directory in /workspace): otherwise a hook planted in the persistent workspace runs
# inside those services at each start.
_RESERVED_ENV_PREFIXES = (
    "IPYTHON",
    "JUPYTER",  # JUPYTER_CONFIG_DIR, JUPYTER_PATH: config files are Python
    "PERL",  # PERL5LIB, PERL5OPT, PERLLIB
    "RUBY",  # RUBYOPT, RUBYLIB
    "NODE_",  # NODE_OPTIONS, NODE_PATH
    "JAVA_",
    "_JAVA_",
    "JDK_JAVA_",
    "LUA_",
    "TCL",
    "BASH_",  # BASH_ENV, BASH_FUNC_*
    "OPENSSL_",  # OPENSSL_CONF loads engines
    "XDG_",  # config and data directories
    "GCONV_",
)
_RESERVED_ENV_NAMES = frozenset(
    {"ENV", "PROMPT_COMMAND", "PS4", "SHELLOPTS", "BASHOPTS", "IFS", "PATH", "HOME", "ZDOTDIR", "GLOBIGNORE"}
)
_SSH_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [^\r\n]*)?$")


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


def check_storage(storage_gb: int) -> None:
    low, high = settings.GPUCLOUD_STORAGE_GB_MIN, settings.GPUCLOUD_STORAGE_GB_MAX
    if isinstance(storage_gb, bool) or not isinstance(storage_gb, int) or not low <= storage_gb <= high:
        raise InvalidStorage(f"Storage must be between {low} and {high} GB.", detail={"min": low, "max": high})


def _check_access(access: list[str], template: Template) -> list[str]:
    unknown = [a for a in access if a not in template.access_methods]
    if unknown:
        raise InvalidAccess(detail={"invalid": unknown, "allowed": list(template.access_methods)})
    return list(dict.fromkeys(access)) or list(template.access_methods)


def _env_reserved(name: str) -> bool:
    upper = name.upper()
    return env_name_reserved(name=name) or upper in _RESERVED_ENV_NAMES or upper.startswith(_RESERVED_ENV_PREFIXES)


def _check_env(env: dict[str, str] | None) -> dict[str, str]:
    env = env or {}
    if not isinstance(env, dict):
        raise InvalidEnv()
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name) or _env_reserved(name):
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


def gpu_memory_check(*, template: Template, gpu_type: GpuType) -> None:
    """Raise GpuTooSmall when the template needs more GPU memory than the type has.

    The type's memory is selectors.gpu_type_memory_mb's: the type's own, else its
    GPUs'. When neither is known the check lets the launch through: refusing would make
    every template with a minimum unlaunchable on a type nobody has described yet.
    """
    needed = template.min_gpu_memory_mb
    if not needed:
        return
    has = selectors.gpu_type_memory_mb(gpu_types=GpuType.objects.filter(pk=gpu_type.pk)).get(gpu_type.sku, 0)
    if has and has < needed:
        raise GpuTooSmall(
            f"{template.name} needs {needed} MiB of GPU memory; the {gpu_type.display_name} has {has} MiB.",
            detail={
                "template": template.slug,
                "gpu": gpu_type.sku,
                "required_memory_mb": needed,
                "gpu_memory_mb": has,
            },
        )


def admit(*, user: Any, gpu_type: GpuType, template: Template) -> None:
    # Billing provides one (enough balance); its exception carries its own code/status.
    for path in settings.GPUCLOUD_ADMISSION_CHECKS:
        import_string(path)(user=user, gpu_type=gpu_type, template=template)


# Held from admission to the commit of the GPU taken; a web process killed meanwhile
# frees it after this long (a launch holds it for a few queries).
ADMISSION_LOCK_TTL_SECONDS = 30.0
ADMISSION_LOCK_WAIT_SECONDS = 10.0


@contextlib.contextmanager
def admission_lock(*, user: Any) -> Iterator[None]:
    """Serialise one user's launches and starts from admission to the commit of the GPU
    taken. Admission counts what the user holds, outside the allocation's transaction:
    without the lock two concurrent launches could each be admitted on the same count.

    Take it outside transaction.atomic() (instances.services.locks). Raises LockBusy
    (503 `instances:busy`) when another of the user's launches holds it past the wait.
    """
    with lock_hold(
        name=f"admission:user:{user.pk}",
        wait_seconds=ADMISSION_LOCK_WAIT_SECONDS,
        ttl_seconds=ADMISSION_LOCK_TTL_SECONDS,
    ):
        yield


def scheduled_data(instance: Instance) -> dict[str, Any]:
    gpu = instance.gpu
    return {
        "host": instance.host.name if instance.host else "",
        "gpu": gpu.uuid if gpu else "",
        "gpu_index": gpu.index if gpu else None,
        "simulated": gpu.simulated if gpu else None,
        "ports": {b.name: b.host_port for b in instance.ports.all()},
    }


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
    idempotency_key: str = "",
    fingerprint: str = "",
    snapshot: str = "",
) -> Instance:
    """Validate, schedule a free GPU and ports, create the instance `pending`, and
    enqueue its provisioning on the host's queue.

    With an `idempotency_key`, the instance the user's earlier launch with that key made
    is returned as it is now (nothing is validated, scheduled or enqueued again), and a
    first launch records the key with the instance in the same transaction.

    Raises IdempotencyKeyReused when the key was used with another `fingerprint` (of the
    request's body), UnknownTemplate, UnknownGpuType, InvalidStorage, InvalidAccess, InvalidEnv,
    InvalidSSHKey, GpuTooSmall, SnapshotNotFound / SnapshotNotReady / SnapshotTooLarge
    (`snapshot`, a ready snapshot of the user's that fits storage_gb, fills the
    workspace before the container starts), an admission check's error, or NoCapacity (detail:
    availability); LockBusy when another launch or start of the user's holds the
    admission lock past its wait (admission_lock);
    QueueUnavailable when the broker refuses the task after the commit (the instance is
    then `failed`, holding nothing).
    """
    if idempotency_key:
        earlier = launch_key_replay(user=user, key=idempotency_key, fingerprint=fingerprint)
        if earlier is not None:
            return earlier
    template = _template(template)
    gpu_type = _gpu_type(gpu_type)
    gpu_memory_check(template=template, gpu_type=gpu_type)
    check_storage(storage_gb)
    access = _check_access(list(access or []), template)
    env = _check_env(env)
    keys = _check_keys(ssh_public_keys)
    source_snapshot = snapshot_get(user=user, public_id=snapshot) if snapshot else None
    if source_snapshot is not None:  # before anything is allocated
        snapshot_check_fits(snapshot=source_snapshot, storage_gb=storage_gb)
    with admission_lock(user=user):
        admit(user=user, gpu_type=gpu_type, template=template)
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
        ports = published_ports(template=template, access=access)
        for _ in range(ALLOCATION_ATTEMPTS):
            try:
                with transaction.atomic():
                    # The key first: a concurrent retry with it waits here on the unique index
                    # until this transaction ends, instead of racing for the GPU (and a 409).
                    claim = _launch_key_claim(user=user, key=idempotency_key, fingerprint=fingerprint)
                    gpu = gpu_take(gpu_type=gpu_type, template=template)
                    if gpu is None:
                        raise no_capacity(gpu_type)
                    instance = Instance.objects.create(gpu=gpu, host=gpu.host, status=Status.PENDING, **fields)
                    ports_bind(instance=instance, host=gpu.host, ports=ports)
                    source = Source.OPERATOR if actor is not None and actor != user else Source.USER
                    event_add(instance=instance, kind=Kind.CREATED, source=source, actor=actor or user)
                    event_add(instance=instance, kind=Kind.SCHEDULED, source=source, data=scheduled_data(instance))
                    if source_snapshot is not None:
                        restore_at_launch(instance=instance, snapshot=source_snapshot)
                    if claim is not None:
                        LaunchKey.objects.filter(pk=claim.pk).update(instance=instance)
                    queue.enqueue(queue.PROVISION, instance, launch_source=source)
                return instance
            except _KeyTaken:
                # A concurrent retry with the same key committed first: ours is rolled back
                # (row, GPU, ports, task) and the customer gets that one's instance.
                earlier = launch_key_replay(user=user, key=idempotency_key, fingerprint=fingerprint)
                if earlier is None:  # its row expired in between: not a case worth a second try
                    raise
                return earlier
            except IntegrityError:
                # Another launch took this GPU or one of these ports first: try again.
                continue
        raise no_capacity(gpu_type)


class _KeyTaken(Exception):
    """Another launch recorded this idempotency key first (the unique constraint)."""


def launch_key_replay(*, user: Any, key: str, fingerprint: str) -> Instance | None:
    """The instance an earlier launch of `user` with `key` made, or None for a new key.

    Deletes the user's keys older than GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS first (that
    is how keys expire: an expired key is a new one). Raises IdempotencyKeyReused when
    the key was recorded with another fingerprint.
    """
    expired_at = timezone.now() - timedelta(seconds=settings.GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS)
    LaunchKey.objects.filter(owner=user, created_at__lt=expired_at).delete()
    # instance is set in the transaction that recorded the key: a committed key has one.
    found = LaunchKey.objects.filter(owner=user, key=key, instance__isnull=False).select_related("instance").first()
    if found is None or found.instance is None:
        return None
    if found.fingerprint != fingerprint:
        raise IdempotencyKeyReused(detail={"idempotency_key": key, "id": found.instance.public_id})
    return found.instance


def launch_keys_purge() -> int:
    """Delete every launch key older than GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS (a beat job:
    a keyed launch purges its own user's keys, this bounds everyone else's). Returns how
    many were deleted."""
    expired_at = timezone.now() - timedelta(seconds=settings.GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS)
    deleted, _ = LaunchKey.objects.filter(created_at__lt=expired_at).delete()
    return deleted


def _launch_key_claim(*, user: Any, key: str, fingerprint: str) -> LaunchKey | None:
    """Record the key (its instance set later in the same transaction); None without one.
    Raises _KeyTaken when another launch recorded it first."""
    if not key:
        return None
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable
            return LaunchKey.objects.create(owner=user, key=key, fingerprint=fingerprint)
    except IntegrityError as exc:
        raise _KeyTaken from exc
