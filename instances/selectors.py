"""Reads of the instances app: querysets scoped to their owner, availability. (Logs are
read on the host: instances.services.logs.)"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import (
    BigIntegerField,
    BooleanField,
    Case,
    CharField,
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce

from instances.errors import NotFound
from instances.models import Gpu, GpuType, Host, Instance, InstanceEvent, InstanceMove, PortBinding


def instance_list(*, user: Any) -> QuerySet[Instance]:
    """The user's instances, newest first, with what a listing shows joined in."""
    return (
        Instance.objects.filter(owner=user)
        .select_related("template", "gpu_type", "gpu", "host", "workspace_usage")
        .prefetch_related("ports")
        .order_by("-created_at", "-id")
    )


def instance_get(*, user: Any, public_id: str) -> Instance:
    """One of the user's instances. Raises NotFound for a missing one or someone else's."""
    instance = instance_list(user=user).filter(public_id=public_id).first()
    if instance is None:
        raise NotFound(detail={"id": public_id})
    return instance


# What the API shows of an instance and of what it joins; the rest of the row (env,
# SSH keys, the container) stays in the database.
_SHOWN = (
    "public_id", "owner", "name", "status", "storage_gb", "access", "created_at", "started_at", "stopped_at",
    "last_error", "progress", "password_encrypted", "access_token_encrypted", "template__slug", "gpu_type__sku",
    "gpu_type__display_name", "gpu_type__rate_per_hour", "host__name", "host__public_address", "host__status",
    "host__status_reason",
    "workspace_usage__used_bytes", "workspace_usage__size_bytes", "workspace_usage__measured_at",
)  # fmt: skip
_SHOWN_PORTS = PortBinding.objects.only("instance", "name", "host_port", "container_port", "protocol")


def instance_page(
    *, user: Any, status: str | None = None, offset: int = 0, limit: int = 1
) -> tuple[list[Instance], int]:
    """A page of the user's instances, newest first, with what the API shows of them
    (template, GPU type, host, port bindings), and how many there are in all.

    The API's hot path: two queries whatever the page holds (the page with its total,
    COUNT(*) OVER (), then its port bindings). Scoped to `user` like every other read.
    """
    if not getattr(user, "is_authenticated", False):
        return [], 0
    found = Instance.objects.filter(owner=user, **({"status": status} if status else {}))
    page: list[Any] = list(
        found.select_related("template", "gpu_type", "host", "workspace_usage")
        .only(*_SHOWN)
        .annotate(total=Window(Count("id")))
        .prefetch_related(Prefetch("ports", queryset=_SHOWN_PORTS))
        .order_by("-created_at", "-id")[offset : offset + limit]
    )
    return page, (page[0].total if page else 0)


def unschedulable_hosts() -> QuerySet[Host, Any]:
    """Hosts the scheduler must skip: a failed preflight (instances.host.preflight), or
    real GPUs never checked."""
    return Host.objects.filter(
        Q(facts__preflight__blocked=True) | (Q(gpus__simulated=False) & ~Q(facts__has_key="preflight"))
    ).values("pk")


def availability() -> list[dict[str, Any]]:
    """Per enabled GPU type: its rate and how many enabled, unquarantined GPUs on online
    hosts that passed their preflight exist and are free (held by no pending-to-starting instance)."""
    usable = (
        Q(gpus__enabled=True, gpus__host__status=Host.Status.ONLINE)
        & ~Q(gpus__host__in=unschedulable_hosts())
        & (Q(gpus__health__isnull=True) | Q(gpus__health__quarantined=False))
    )
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


def start_is_restart(*, instance_id: int) -> bool:
    """Whether the last start asked of an instance was a restart (same GPU and ports)."""
    kinds = (InstanceEvent.Kind.START_REQUESTED, InstanceEvent.Kind.RESTART_REQUESTED)
    last = (
        InstanceEvent.objects.filter(instance_id=instance_id, kind__in=kinds)
        .order_by("-at", "-pk")
        .values_list("kind", flat=True)
        .first()
    )
    return last == InstanceEvent.Kind.RESTART_REQUESTED


def gpu_holdings(*, user: Any) -> dict[str, Any]:
    """What the user holds now (one query): `instances` in a GPU-holding status, the
    `gpus` they hold (one each) and `rate_per_hour`, the sum of their GPU types' current
    hourly rates (Decimal). Admission checks read it to count a launch on top of it."""
    row = Instance.objects.filter(owner_id=user.pk, status__in=Instance.GPU_HOLDING).aggregate(
        instances=Count("id"), rate_per_hour=Sum("gpu_type__rate_per_hour")
    )
    return {
        "instances": row["instances"],
        "gpus": row["instances"],
        "rate_per_hour": row["rate_per_hour"] or Decimal(0),
    }


# -- facts billing reads
# Billing is level-driven: it reads the lifecycle's facts (the running segments the
# timeline records, their owners, GPUs and disks) here, so the event kinds and tables
# of instances stay named in one app. The querysets are composable: billing compiles
# them into its own set-based statements (no rows come back to Python).

# A running segment opens at `started` and ends at the next `ended` (the container's real
# finish time when the reconciler found it dead). A stored workspace (storage billing)
# opens at `ended` and ends at the next start, the termination or the workspace's removal;
# a resize (of a stopped instance) ends it and opens the next at the new size. A storage
# segment is priced at the `storage_gb` its opening event recorded (the instance's size
# now for events written before they recorded one).
# A host that stops beating pauses its stored workspaces (`host-unreachable`, at its last
# beat) until it is back (`host-returned` opens the next storage segment; a running
# instance seen running again opens a GPU segment instead: instances.services.liveness).
SEGMENT_OPENING_KINDS = (
    InstanceEvent.Kind.STARTED,
    InstanceEvent.Kind.ENDED,
    InstanceEvent.Kind.RESIZED,
    InstanceEvent.Kind.HOST_RETURNED,
)
_RUNNING_ENDS = (InstanceEvent.Kind.ENDED,)
_STORED_ENDS = (
    InstanceEvent.Kind.STARTED,
    InstanceEvent.Kind.TERMINATED,
    InstanceEvent.Kind.WORKSPACE_REMOVED,
    InstanceEvent.Kind.RESIZED,
    InstanceEvent.Kind.HOST_UNREACHABLE,
)


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
            storage_gb=Coalesce(
                Cast(KT("data__storage_gb"), IntegerField()), F("instance__storage_gb"), output_field=IntegerField()
            ),
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


def snapshot_segment_starts(*, after_event_id: int, until: datetime) -> QuerySet[InstanceEvent]:
    """`snapshot-ready` events above `after_event_id`, at or before `until`: each opens a
    billed snapshot segment. Annotated with `owner_id`, `size_bytes` (stored) and
    `snapshot` (its public id)."""
    # A move's own snapshot (instances.services.move) is the workspace in transit, whose
    # storage is billed already: never billed as a snapshot.
    in_transit = InstanceMove.objects.filter(snapshot_made=True, snapshot__public_id=OuterRef("snapshot"))
    return (
        InstanceEvent.objects.filter(id__gt=after_event_id, kind=InstanceEvent.Kind.SNAPSHOT_READY, at__lte=until)
        .annotate(
            owner_id=F("instance__owner_id"),
            size_bytes=Cast(KT("data__size_bytes"), BigIntegerField()),
            snapshot=KT("data__snapshot"),
        )
        .exclude(Exists(in_transit))
        .order_by()
    )


def snapshot_segment_ends(*, instance_id: Any, start_event_id: Any, until: datetime) -> QuerySet[InstanceEvent]:
    """The `snapshot-deleted` event, at or before `until`, of the snapshot whose
    `snapshot-ready` event is `start_event_id`, on `instance_id`'s timeline (both
    OuterRefs of the query this is a subquery of)."""
    ready = InstanceEvent.objects.filter(pk=OuterRef(start_event_id)).annotate(s=KT("data__snapshot")).values("s")[:1]
    return (
        InstanceEvent.objects.filter(instance_id=instance_id, kind=InstanceEvent.Kind.SNAPSHOT_DELETED, at__lte=until)
        .annotate(deleted=KT("data__snapshot"))
        .filter(deleted=Subquery(ready))
        .order_by("id")
    )
