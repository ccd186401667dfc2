"""Scheduling: which GPU and which host ports an instance gets.

The row lock (`select_for_update(skip_locked=True)`) keeps two launches off one GPU
in the common case; the database's partial unique constraint (one active instance per
GPU) and the unique (host, host port) are the backstop, and callers retry on
IntegrityError.
"""

from __future__ import annotations

import random
from typing import Any

from instances.errors import NoCapacity
from instances.models import Gpu, GpuType, Host, Instance, PortBinding
from instances.selectors import availability, unschedulable_hosts
from templates_app.models import Template

# Port names that are access methods of their own; any other port is reached as "http".
_NAMED_ACCESS = ("ssh", "jupyter", "code-server", "terminal")
ALLOCATION_ATTEMPTS = 8


def published_ports(*, template: Template, access: list[str]) -> list[dict[str, Any]]:
    """The template's ports the customer asked to reach: nothing else is published."""
    wanted = []
    for port in template.ports:
        method = port["name"] if port["name"] in _NAMED_ACCESS else port.get("protocol", "tcp")
        if method in access or method == "tcp":
            wanted.append(port)
    return wanted


def gpu_take(*, gpu_type: GpuType, host: Host | None = None) -> Gpu | None:
    """Lock a free enabled GPU of the type on an online host, skipping ones another
    transaction is taking; the partial unique constraint catches what slips past."""
    busy = Instance.objects.filter(status__in=Instance.GPU_HOLDING, gpu__isnull=False).values("gpu_id")
    candidates = (
        Gpu.objects.filter(gpu_type=gpu_type, enabled=True, host__status=Host.Status.ONLINE)
        .exclude(pk__in=busy)
        # A host whose runc / NVIDIA toolkit lacks escape fixes (instances.host.preflight) takes nothing.
        .exclude(host__in=unschedulable_hosts())
        # A GPU whose health check failed is rented to nobody until an operator returns it.
        .exclude(health__quarantined=True)
    )
    if host is not None:
        candidates = candidates.filter(host=host)
    return (
        candidates.select_related("host")
        .select_for_update(skip_locked=True, of=("self",))
        .order_by("host__name", "index")
        .first()
    )


def ports_bind(*, instance: Instance, host: Host, ports: list[dict[str, Any]]) -> None:
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


def no_capacity(gpu_type: GpuType) -> NoCapacity:
    return NoCapacity(
        f"No {gpu_type.display_name} is free right now.",
        detail={"gpu": gpu_type.sku, "availability": availability()},
    )
