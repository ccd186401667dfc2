"""Reads of the instances app: querysets scoped to their owner, availability, logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import BooleanField, Case, CharField, Count, F, Max, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.utils.dateparse import parse_datetime

from instances.errors import NotFound
from instances.host.runtime import DockerRuntime, get_runtime
from instances.models import Gpu, GpuType, Host, Instance, InstanceEvent, PortBinding
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


def unschedulable_hosts() -> QuerySet[Host]:
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


def instance_events(*, instance: Instance) -> QuerySet[InstanceEvent]:
    return instance.events.select_related("actor").order_by("at", "id")


def instance_logs(*, instance: Instance, lines: int = 100, runtime: DockerRuntime | None = None) -> str:
    """The last `lines` lines of the container's output; "" when it has no container."""
    if instance.host is None or instance.status not in ("provisioning", "running", "stopping", "starting"):
        return ""
    runtime = runtime or get_runtime(base_url=instance.host.docker_url)
    return runtime.logs(instance.container_name, lines=max(1, min(int(lines), 10_000)))


# -- facts billing reads
# Billing is level-driven: it reads the lifecycle's facts (the running segments the
# timeline records, their owners, GPUs and disks) here, so the event kinds and tables
# of instances stay named in one app. The querysets are composable: billing compiles
# them into its own set-based statements (no rows come back to Python).

# A running segment opens at `started` and ends at the next `ended` (the container's real
# finish time when the reconciler found it dead). A stored workspace (storage billing)
# opens at `ended` and ends at the next start, the termination or the workspace's removal.
SEGMENT_OPENING_KINDS = (InstanceEvent.Kind.STARTED, InstanceEvent.Kind.ENDED)
_RUNNING_ENDS = (InstanceEvent.Kind.ENDED,)
_STORED_ENDS = (InstanceEvent.Kind.STARTED, InstanceEvent.Kind.TERMINATED, InstanceEvent.Kind.WORKSPACE_REMOVED)


def segment_starts(*, after_event_id: int, until: datetime) -> QuerySet[InstanceEvent]:
    """Events that open a segment, above `after_event_id` and at or before `until`, each
    annotated with what billing prices it by: `running` (a GPU segment, else storage),
    `owner_id`, `gpu_type_id`, `storage_gb`, `gpu_type_rate_per_hour` (the type's rate
    now) and `gpu_name` (the GPU the worker recorded in the event's data, else the type's
    display name; "" for storage)."""
    ran_on = Gpu.objects.filter(uuid=OuterRef("gpu_uuid")).values("name")[:1]
    running = Q(kind=InstanceEvent.Kind.STARTED)
    return (
        InstanceEvent.objects.filter(id__gt=after_event_id, kind__in=SEGMENT_OPENING_KINDS, at__lte=until)
        .annotate(gpu_uuid=KT("data__gpu"))
        .annotate(
            running=Case(When(running, then=Value(True)), default=Value(False), output_field=BooleanField()),
            owner_id=F("instance__owner_id"),
            gpu_type_id=F("instance__gpu_type_id"),
            storage_gb=F("instance__storage_gb"),
            gpu_type_rate_per_hour=F("instance__gpu_type__rate_per_hour"),
            gpu_name=Case(
                When(running, then=Coalesce(Subquery(ran_on), F("instance__gpu_type__display_name"))),
                default=Value(""),
                output_field=CharField(),
            ),
        )
        .order_by()
    )


def segment_ends(*, instance_id: Any, after_event_id: Any, running: bool, until: datetime) -> QuerySet[InstanceEvent]:
    """The events that end a segment of `instance_id` opened by `after_event_id` (values or
    OuterRef), at or before `until`, first one first."""
    # `id + 0`: only the per-instance index may drive this lookup. With a bare `id` the
    # planner was seen walking the primary key (or the kind/at index) from the segment's
    # start once per open segment.
    return (
        InstanceEvent.objects.filter(
            instance_id=instance_id, kind__in=_RUNNING_ENDS if running else _STORED_ENDS, at__lte=until
        )
        .alias(seq=F("id") + 0)
        .filter(seq__gt=after_event_id)
        .order_by("seq")
    )


def event_id_latest() -> int:
    """The highest event id committed so far (0 without events)."""
    return InstanceEvent.objects.aggregate(latest=Max("id"))["latest"] or 0
