"""Helpers the lifecycle services share: events, the per-instance lock, segment facts.

A running segment (what billing charges) opens with a `started` event and closes
with exactly one `ended` event. Both are written in the same transaction as the
status change, under the instance's row lock, so a task that runs twice cannot
write a second `ended`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from instances.errors import InfrastructureError
from instances.models import Host, Instance, InstanceEvent, PortBinding
from instances.runtime import DockerRuntime, get_runtime

logger = logging.getLogger("instances.lifecycle")

Kind = InstanceEvent.Kind
Source = InstanceEvent.Source
Status = Instance.Status

# Statuses in which the instance's container may legitimately exist.
CONTAINER_STATUSES = ("provisioning", "running", "stopping", "starting", "terminating")


class InstanceBusy(InfrastructureError):
    """Another task holds this instance's lock: the caller retries later."""

    code = "instances:busy"
    default_message = "Another operation on this instance is in progress."


def event_add(
    *,
    instance: Instance,
    kind: str,
    source: str,
    message: str = "",
    data: dict[str, Any] | None = None,
    actor: Any = None,
    at: datetime | None = None,
) -> InstanceEvent:
    """Append to the instance's timeline. Never put a secret in `message` or `data`."""
    return InstanceEvent.objects.create(
        instance=instance,
        at=at or timezone.now(),
        kind=kind,
        source=source,
        actor=actor if getattr(actor, "pk", None) else None,
        message=message,
        data=data or {},
    )


def runtime_for(*, host: Host, runtime: DockerRuntime | None = None) -> DockerRuntime:
    return runtime or get_runtime(base_url=host.docker_url)


@contextlib.contextmanager
def instance_lock(*, instance_id: int) -> Iterator[None]:
    """Serialise the worker-side work on one instance across threads and processes.

    The timeout outlives the hard task time limit, so a lock is never lost while its
    holder still runs, and a killed holder's lock expires before Redis redelivers.
    Raises InstanceBusy (retried like any infrastructure error) when held.
    """
    key = _lock_key(instance_id)
    token = secrets.token_hex(8)
    if not cache.add(key, token, timeout=settings.CELERY_TASK_TIME_LIMIT + 60):
        raise InstanceBusy(detail={"instance_id": instance_id})
    try:
        yield
    finally:
        if cache.get(key) == token:
            cache.delete(key)


def _lock_key(instance_id: int) -> str:
    return f"gpucloud:instance-lock:{instance_id}"


def instance_lock_held(*, instance_id: int) -> bool:
    return cache.get(_lock_key(instance_id)) is not None


def segment_is_open(instance: Instance) -> bool:
    return instance.started_at is not None and (
        instance.stopped_at is None or instance.stopped_at < instance.started_at
    )


def segment_open(*, instance: Instance, at: datetime, source: str, data: dict[str, Any] | None = None) -> None:
    """Record that a running segment began at `at`. Call under the row lock."""
    instance.started_at = at
    event_add(instance=instance, kind=Kind.STARTED, source=source, at=at, data=data)


def segment_close(*, instance: Instance, at: datetime | None, source: str, reason: str = "") -> None:
    """Close the open running segment at `at` (the container's real finish time when
    known), once. Call under the row lock; a no-op when no segment is open."""
    if not segment_is_open(instance):
        return
    started_at = instance.started_at or timezone.now()
    ended_at = max(at or timezone.now(), started_at)
    instance.stopped_at = ended_at
    seconds = (ended_at - started_at).total_seconds()
    event_add(
        instance=instance,
        kind=Kind.ENDED,
        source=source,
        at=ended_at,
        message=reason,
        data={"started_at": started_at.isoformat(), "seconds": round(seconds, 3)},
    )


def release(*, instance: Instance) -> None:
    """Free the instance's GPU and host ports (the host, holding the workspace, stays)."""
    instance.gpu = None
    instance.container_id = ""
    PortBinding.objects.filter(instance=instance).delete()


def exposure_call(*, instance: Instance, publish: bool) -> None:
    """Publish or withdraw the instance's public routes (instances.exposure).

    The single call site of the exposure hooks. Outside any transaction; a failure is
    logged and never undoes the lifecycle step (both hooks are idempotent and run
    again on the next step).
    """
    from instances import exposure

    try:
        if publish:
            exposure.exposure_publish(instance=instance)
        else:
            exposure.exposure_withdraw(instance=instance)
    except Exception as exc:
        logger.warning(
            "instance %s: exposure %s failed: %s",
            instance.public_id,
            "publish" if publish else "withdraw",
            getattr(exc, "code", type(exc).__name__),
        )
