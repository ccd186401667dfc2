"""Reads of the instances app: querysets scoped to their owner, availability, logs."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from instances.errors import NotFound
from instances.models import GpuType, Host, Instance, InstanceEvent
from instances.preflight import unschedulable_hosts
from instances.runtime import DockerRuntime, get_runtime


def instance_list(*, user: Any) -> QuerySet[Instance]:
    """The user's instances, newest first, with what a listing shows joined in."""
    return (
        Instance.objects.filter(owner=user)
        .select_related("template", "gpu_type", "gpu", "host")
        .prefetch_related("ports")
        .order_by("-created_at", "-id")
    )


def instance_get(*, user: Any, public_id: str) -> Instance:
    """One of the user's instances. Raises NotFound for a missing one or someone else's."""
    instance = instance_list(user=user).filter(public_id=public_id).first()
    if instance is None:
        raise NotFound(detail={"id": public_id})
    return instance


def availability() -> list[dict[str, Any]]:
    """Per enabled GPU type: its rate and how many enabled GPUs on online hosts that
    passed their preflight exist and are free (held by no pending-to-starting instance)."""
    usable = Q(gpus__enabled=True, gpus__host__status=Host.Status.ONLINE) & ~Q(gpus__host__in=unschedulable_hosts())
    busy = usable & Q(gpus__instances__status__in=Instance.GPU_HOLDING)
    types = GpuType.objects.filter(enabled=True).annotate(
        total=Count("gpus", filter=usable, distinct=True),
        busy=Count("gpus", filter=busy, distinct=True),
    )
    return [
        {
            "sku": t.sku,
            "display_name": t.display_name,
            "rate_per_hour": t.rate_per_hour,
            "total": t.total,
            "free": t.total - t.busy,
        }
        for t in types.order_by("rate_per_hour", "sku")
    ]


def instance_events(*, instance: Instance) -> QuerySet[InstanceEvent]:
    return instance.events.select_related("actor").order_by("at", "id")


def instance_logs(*, instance: Instance, lines: int = 100, runtime: DockerRuntime | None = None) -> str:
    """The last `lines` lines of the container's output; "" when it has no container."""
    if instance.host is None or instance.status not in ("provisioning", "running", "stopping", "starting"):
        return ""
    runtime = runtime or get_runtime(base_url=instance.host.docker_url)
    return runtime.logs(instance.container_name, lines=max(1, min(int(lines), 10_000)))
