"""Reads of the instances app: querysets scoped to their owner, availability. (Logs are
read on the host: instances.services.logs.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import Count, Min, Q, QuerySet
from django.utils.dateparse import parse_datetime

from instances.errors import NotFound
from instances.models import GpuType, Host, Instance, InstanceEvent, PortBinding
from templates_app.models import Template


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


class PortRow(NamedTuple):
    name: str
    host_port: int
    container_port: int
    protocol: str


class InstanceRow(NamedTuple):
    """What the API shows of an instance, read as plain values (no models)."""

    id: int
    public_id: str
    owner_id: int
    name: str
    status: str
    storage_gb: int
    access: list[str]
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    last_error: str
    password_encrypted: str
    access_token_encrypted: str
    template_slug: str
    gpu_type_sku: str
    gpu_type_display_name: str
    rate_per_hour: Decimal
    host_name: str | None
    host_address: str | None
    ports: list[PortRow]


def _sql_rows(*, by_status: bool, by_id: bool) -> str:
    # Table names come from the models, values are bound parameters.
    i, t, g, h = (m._meta.db_table for m in (Instance, Template, GpuType, Host))
    where = " AND ".join(["i.owner_id = %s", *(["i.status = %s"] * by_status), *(["i.id = %s"] * by_id)])
    return f"""
        SELECT i.id, i.public_id, i.owner_id, i.name, i.status, i.storage_gb, i.access,
               i.created_at, i.started_at, i.stopped_at, i.last_error,
               i.password_encrypted, i.access_token_encrypted,
               t.slug, g.sku, g.display_name, g.rate_per_hour, h.name, h.public_address,
               COUNT(*) OVER ()
        FROM {i} i
        JOIN {t} t ON t.id = i.template_id
        JOIN {g} g ON g.id = i.gpu_type_id
        LEFT JOIN {h} h ON h.id = i.host_id
        WHERE {where}
        ORDER BY i.created_at DESC, i.id DESC
        LIMIT %s OFFSET %s"""  # noqa: S608


def _sql_ports(count: int) -> str:
    table, marks = PortBinding._meta.db_table, ", ".join(["%s"] * count)
    return f"SELECT instance_id, name, host_port, container_port, protocol FROM {table} WHERE instance_id IN ({marks})"  # noqa: S608


def _aware(value: Any) -> datetime | None:
    # PostgreSQL gives aware datetimes; SQLite (the quick start) gives text.
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return value
    parsed = value if isinstance(value, datetime) else parse_datetime(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def instance_rows(
    *, user: Any, status: str | None = None, instance_id: int | None = None, offset: int = 0, limit: int = 1
) -> tuple[list[InstanceRow], int]:
    """A page of the user's instances, newest first, and how many there are in all.

    The API's hot path: hand-written SQL, two queries whatever the page holds (the page
    with its total, then its port bindings), plain tuples instead of models: the ORM's
    compiling and model building cost several times the queries themselves
    (bench/api.py). Scoped to `user` like every other read of instances.
    """
    if not getattr(user, "is_authenticated", False):
        return [], 0
    params = [user.pk, *([status] if status else []), *([instance_id] if instance_id else []), limit, offset]
    with connection.cursor() as cursor:
        cursor.execute(_sql_rows(by_status=bool(status), by_id=bool(instance_id)), params)
        found = cursor.fetchall()
        ports: dict[int, list[PortRow]] = {row[0]: [] for row in found}
        if found:
            cursor.execute(_sql_ports(len(ports)), list(ports))
            for instance_pk, *port in cursor.fetchall():
                ports[instance_pk].append(PortRow(*port))
    rows = []
    for r in found:
        rate = r[16] if isinstance(r[16], Decimal) else Decimal(str(r[16]))
        access = json.loads(r[6]) if isinstance(r[6], str) else r[6]
        rows.append(
            InstanceRow(
                *r[:6], access, _aware(r[7]), _aware(r[8]), _aware(r[9]), *r[10:16], rate, *r[17:19], ports[r[0]]
            )
        )
    return rows, (found[0][19] if found else 0)


def unschedulable_hosts() -> QuerySet[Host, Any]:
    """Hosts the scheduler must skip: a failed preflight (instances.host.preflight), or
    real GPUs never checked."""
    return Host.objects.filter(
        Q(facts__preflight__blocked=True) | (Q(gpus__simulated=False) & ~Q(facts__has_key="preflight"))
    ).values("pk")


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


def gpu_type_memory_mb(*, gpu_types: QuerySet[GpuType] | None = None) -> dict[str, int]:
    """GPU memory in MiB per GPU type (by SKU); 0 where it is unknown.

    The type's own `memory_mb` when an operator entered it; when that is 0, the smallest
    memory the type's GPUs report (the scheduler may pick any of them); 0 when neither
    is known. One query for all the types.
    """
    gpu_types = GpuType.objects.all() if gpu_types is None else gpu_types
    rows = gpu_types.annotate(reported=Min("gpus__memory_mb", filter=Q(gpus__memory_mb__gt=0))).values_list(
        "sku", "memory_mb", "reported"
    )
    return {sku: declared or reported or 0 for sku, declared, reported in rows}


def instance_events(*, instance: Instance) -> QuerySet[InstanceEvent]:
    return instance.events.select_related("actor").order_by("at", "id")
