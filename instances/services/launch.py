"""Launching an instance: validate what the customer asked for, take a free GPU and
host ports, create the row `pending`, and hand it to the host's worker on commit."""

from __future__ import annotations

import re
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from instances import selectors
from instances.access.crypto import encrypt
from instances.errors import (
    GpuTooSmall,
    InvalidAccess,
    InvalidEnv,
    InvalidSSHKey,
    InvalidStorage,
    UnknownGpuType,
    UnknownTemplate,
)
from instances.models import GpuType, Instance
from instances.services import queue
from instances.services.events import Kind, Source, Status, event_add
from instances.services.scheduling import ALLOCATION_ATTEMPTS, gpu_take, no_capacity, ports_bind, published_ports
from templates_app.models import Template

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A customer's variables reach every process of the container, the image's own services
# (sshd's start script, Jupyter) included. Names the platform sets, and every variable an
# interpreter or loader reads to run code it was not asked to (a start-up file, a module
# path, injected options, a config directory in /workspace), are refused: otherwise a hook
# planted in the persistent workspace runs inside those services at each start.
_RESERVED_ENV_PREFIXES = (
    "GPUCLOUD_",
    "NVIDIA_",
    "LD_",
    "PYTHON",  # PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, PYTHONUSERBASE, ...
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


def _check_storage(storage_gb: int) -> None:
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
    return upper in _RESERVED_ENV_NAMES or upper.startswith(_RESERVED_ENV_PREFIXES)


def _check_env(env: dict[str, str] | None) -> dict[str, str]:
    env = env or {}
    if not isinstance(env, dict):
        raise InvalidEnv()
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name) or _env_reserved(name):
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
) -> Instance:
    """Validate, schedule a free GPU and ports, create the instance `pending`, and
    enqueue its provisioning on the host's queue.

    Raises UnknownTemplate, UnknownGpuType, InvalidStorage, InvalidAccess, InvalidEnv,
    InvalidSSHKey, GpuTooSmall, an admission check's error, or NoCapacity (detail:
    availability);
    QueueUnavailable when the broker refuses the task after the commit (the instance is
    then `failed`, holding nothing).
    """
    template = _template(template)
    gpu_type = _gpu_type(gpu_type)
    gpu_memory_check(template=template, gpu_type=gpu_type)
    _check_storage(storage_gb)
    access = _check_access(list(access or []), template)
    env = _check_env(env)
    keys = _check_keys(ssh_public_keys)
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
                gpu = gpu_take(gpu_type=gpu_type)
                if gpu is None:
                    raise no_capacity(gpu_type)
                instance = Instance.objects.create(gpu=gpu, host=gpu.host, status=Status.PENDING, **fields)
                ports_bind(instance=instance, host=gpu.host, ports=ports)
                source = Source.OPERATOR if actor is not None and actor != user else Source.USER
                event_add(instance=instance, kind=Kind.CREATED, source=source, actor=actor or user)
                event_add(instance=instance, kind=Kind.SCHEDULED, source=source, data=scheduled_data(instance))
                queue.enqueue(queue.PROVISION, instance, launch_source=source)
            return instance
        except IntegrityError:
            # Another launch took this GPU or one of these ports first: try again.
            continue
    raise no_capacity(gpu_type)
