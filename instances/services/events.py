"""The instance's timeline: events, and the running segments billing charges.

A running segment (what billing charges) opens with a `started` event and closes
with exactly one `ended` event. Both are written in the same transaction as the
status change, under the instance's row lock, so a task that runs twice cannot
write a second `ended`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.utils import timezone

from instances.models import Instance, InstanceEvent, PortBinding

logger = logging.getLogger("instances.lifecycle")

Kind = InstanceEvent.Kind
Source = InstanceEvent.Source
Status = Instance.Status

# Statuses in which the instance's container may legitimately exist.
CONTAINER_STATUSES = ("provisioning", "running", "stopping", "starting", "terminating")


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
        # The size the stored workspace is billed at from here (until a resize says otherwise).
        data={"started_at": started_at.isoformat(), "seconds": round(seconds, 3), "storage_gb": instance.storage_gb},
    )


def release(*, instance: Instance) -> None:
    """Free the instance's GPU and host ports (the host, holding the workspace, stays)."""
    instance.gpu = None
    instance.container_id = ""
    PortBinding.objects.filter(instance=instance).delete()
