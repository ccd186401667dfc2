"""Scheduling: which GPU and which host ports an instance gets.

The row lock (`select_for_update(skip_locked=True)`) keeps two launches off one GPU
in the common case; the database's partial unique constraint (one active instance per
GPU) and the unique (host, host port) are the backstop, and callers retry on
IntegrityError.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Case, Count, IntegerField, QuerySet, Sum, Value, When

from instances.errors import NoCapacity
from instances.models import Gpu, GpuType, Host, Instance, PortBinding
from instances.registry_models import HostImage
from instances.selectors import availability, unschedulable_hosts
from templates_app.models import Template

# Port names that are access methods of their own; any other port is reached as "http".
_NAMED_ACCESS = ("ssh", "jupyter", "code-server", "terminal")
ALLOCATION_ATTEMPTS = 8
# How many of the ranked hosts one locking statement considers.
LOCK_WINDOW = 8


def published_ports(*, template: Template, access: list[str]) -> list[dict[str, Any]]:
    """The template's ports the customer asked to reach: nothing else is published."""
    wanted = []
    for port in template.ports:
        method = port["name"] if port["name"] in _NAMED_ACCESS else port.get("protocol", "tcp")
        if method in access or method == "tcp":
            wanted.append(port)
    return wanted


def _holdings(*, host_ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """Per host: instances holding a GPU there, and the CPU and RAM their types reserve."""
    held = Instance.objects.filter(status__in=Instance.GPU_HOLDING, host__isnull=False)
    if host_ids is not None:
        held = held.filter(host_id__in=host_ids)
    rows = (
        held.order_by()
        .values("host_id")
        .annotate(n=Count("id"), cpu=Sum("gpu_type__cpu_limit"), ram_mb=Sum("gpu_type__ram_limit_mb"))
    )
    return {r["host_id"]: dict(r) for r in rows}


def _fits(*, host: dict[str, Any], held: dict[str, Any] | None, gpu_type: GpuType, new_instance: bool) -> bool:
    """Whether the host's declared CPU and RAM (empty: not accounted) take one more of
    `gpu_type` on top of what its instances reserve."""
    if not new_instance:  # a GPU swapped under an instance already counted
        return True
    cpu_used = Decimal(held["cpu"] or 0) if held else Decimal(0)
    ram_used = int(held["ram_mb"] or 0) if held else 0
    if host["cpu_capacity"] is not None and cpu_used + gpu_type.cpu_limit > host["cpu_capacity"]:
        return False
    return host["ram_capacity_mb"] is None or ram_used + gpu_type.ram_limit_mb <= host["ram_capacity_mb"]


def _free_gpus(*, gpu_type: GpuType, host: Host | None) -> QuerySet[Gpu]:
    candidates = (
        _takeable(gpu_type=gpu_type)
        # A host whose runc / NVIDIA toolkit lacks escape fixes (instances.host.preflight) takes nothing.
        .exclude(host__in=unschedulable_hosts())
    )
    return candidates if host is None else candidates.filter(host=host)


def _takeable(*, gpu_type: GpuType) -> QuerySet[Gpu]:
    busy = Instance.objects.filter(status__in=Instance.GPU_HOLDING, gpu__isnull=False).values("gpu_id")
    return (
        Gpu.objects.filter(gpu_type=gpu_type, enabled=True, host__status=Host.Status.ONLINE)
        .exclude(pk__in=busy)
        # A GPU whose health check failed is rented to nobody until an operator returns it.
        .exclude(health__quarantined=True)
    )


def hosts_ranked(
    *, gpu_type: GpuType, host: Host | None = None, template: Template | None = None, new_instance: bool = True
) -> list[int]:
    """Ids of the hosts with a free GPU of `gpu_type` that take one more instance of it,
    best first: the template's image already there, then by the placement policy
    (GPUCLOUD_PLACEMENT_POLICY): `spread` least loaded first, `pack` most loaded first
    (a host is filled before the next, so whole hosts stay free); then by name."""
    hosts: list[dict[str, Any]] = [
        {"pk": h["host_id"], "name": h["host__name"], "cpu_capacity": h["host__cpu_capacity"],
         "ram_capacity_mb": h["host__ram_capacity_mb"]}
        for h in _free_gpus(gpu_type=gpu_type, host=host)
        .order_by()
        .values("host_id", "host__name", "host__cpu_capacity", "host__ram_capacity_mb")
        .distinct()
    ]  # fmt: skip
    held = _holdings(host_ids=[h["pk"] for h in hosts]) if len(hosts) > 1 or new_instance else {}
    hosts = [h for h in hosts if _fits(host=h, held=held.get(h["pk"]), gpu_type=gpu_type, new_instance=new_instance)]
    cached: set[int] = set()
    if template is not None and len(hosts) > 1:
        cached = set(
            HostImage.objects.filter(image=template.image, present=True, host_id__in=[h["pk"] for h in hosts])
            .values_list("host_id", flat=True)
        )  # fmt: skip
    sign = -1 if settings.GPUCLOUD_PLACEMENT_POLICY == "pack" else 1

    def rank(h: dict[str, Any]) -> tuple[int, int, str]:
        load = held[h["pk"]]["n"] if h["pk"] in held else 0
        return (0 if h["pk"] in cached else 1, sign * load, h["name"])

    return [h["pk"] for h in sorted(hosts, key=rank)]


def gpu_take(
    *, gpu_type: GpuType, host: Host | None = None, template: Template | None = None, new_instance: bool = True
) -> Gpu | None:
    """Lock a free enabled GPU of the type on an online host (on `host` when given), on
    the best host by hosts_ranked, in the caller's transaction; None when there is none.

    The host's row is locked with the GPU (FOR NO KEY UPDATE: inserts that reference the
    host are not blocked), so launches on one host are serialized and its CPU and RAM,
    checked again under the lock, are never over-committed; a launch skips a host
    another launch holds and takes the next. Only when every candidate was held does it
    wait for the best one. The partial unique constraint (one active instance per GPU)
    remains the backstop."""
    ranked = hosts_ranked(gpu_type=gpu_type, host=host, template=template, new_instance=new_instance)
    locked_any, remaining = False, list(ranked)
    while remaining:
        # The best few hosts in one statement: the first GPU in rank order whose host no
        # other launch holds (SKIP LOCKED), so concurrent launches fan out over hosts.
        gpu = _gpu_lock(gpu_type=gpu_type, host_ids=remaining[:LOCK_WINDOW], wait=False)
        if gpu is None:
            remaining = remaining[LOCK_WINDOW:]  # all taken or held: the next few
            continue
        if _fits_now(gpu=gpu, gpu_type=gpu_type, new_instance=new_instance):
            return gpu
        locked_any = True  # full since the ranking: the others
        remaining = [h for h in remaining if h != gpu.host_id]
    if locked_any:
        return None
    # Every candidate was held by another launch: wait for the first that still has a
    # free GPU. One lock only while waiting, so two such launches cannot deadlock.
    for host_id in ranked:
        gpu = _gpu_lock(gpu_type=gpu_type, host_ids=[host_id], wait=True)
        if gpu is not None:
            return gpu if _fits_now(gpu=gpu, gpu_type=gpu_type, new_instance=new_instance) else None
    return None


def _gpu_lock(*, gpu_type: GpuType, host_ids: list[int], wait: bool) -> Gpu | None:
    # The hosts passed their preflight when they were ranked (a moment ago): not asked again.
    rank = Case(*(When(host_id=h, then=Value(i)) for i, h in enumerate(host_ids)), output_field=IntegerField())
    return (
        _takeable(gpu_type=gpu_type)
        .filter(host_id__in=host_ids)
        .select_related("host")
        .select_for_update(skip_locked=not wait, of=("self", "host"), no_key=True)
        .order_by(rank, "index")
        .first()
    )


def _fits_now(*, gpu: Gpu, gpu_type: GpuType, new_instance: bool) -> bool:
    # Under the host's lock nobody else is placing on it: what it holds is final.
    row = {"cpu_capacity": gpu.host.cpu_capacity, "ram_capacity_mb": gpu.host.ram_capacity_mb}
    if row["cpu_capacity"] is None and row["ram_capacity_mb"] is None:
        return True
    held = _holdings(host_ids=[gpu.host_id]).get(gpu.host_id)
    return _fits(host=row, held=held, gpu_type=gpu_type, new_instance=new_instance)


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
