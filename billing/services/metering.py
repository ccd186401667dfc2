"""Metering: turn the lifecycle's facts into usage segments and ledger entries.

One implementation for PostgreSQL and SQLite (the quick start): a constant number of
set-based statements built with the ORM, so Django compiles them for each database and
the number of segments costs no queries. Every amount is integer arithmetic in
micro-dollars inside the database (SQLite has no exact decimals), converted to USD only
where it is written to a money column.

The rules: a GPU segment per `started` event at the GPU rate in force at that instant
(the price history, else the type's current rate), 60 s minimum, per second after; a
storage segment per `ended` event at storage_gb * GPUCLOUD_STORAGE_RATE_PER_GB_MONTH per
30-day month, until the next start, the termination or the workspace's removal; a
snapshot segment per `snapshot-ready` event at its stored GiB * GPUCLOUD_SNAPSHOT_RATE_PER_GB_MONTH
per month until its `snapshot-deleted` event. Each run
extends every open segment to now in whole seconds (the `billed_seconds` watermark) and
posts the difference to the ledger under the key `usage:<segment>:<seconds>` (or
`:final` when the segment closes, at its cost rounded half up to the cent), in the same
transaction as the watermark and the cached balance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    DateTimeField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    IntegerField,
    Max,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Concat, Greatest, Round
from django.utils import timezone

from billing.models import (
    GPU_MINIMUM_SECONDS,
    SECONDS_PER_HOUR,
    SECONDS_PER_MONTH,
    BillingAccount,
    GpuRate,
    LedgerEntry,
    MeterMark,
    UsageRecord,
)
from instances.selectors import (
    event_id_latest,
    segment_ends,
    segment_starts,
    snapshot_segment_ends,
    snapshot_segment_starts,
)

MICRO = 1_000_000
CENT_MICRO = 10_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# pg advisory lock key of the meter run ("gpme"): one run at a time across all workers.
METER_LOCK_KEY = 0x6770_6D65
# Events at or below the mark of a run this much older than the last run are all billed
# (see MeterMark).
METER_MARK_LAG_SECONDS = 3600


class EpochMicroseconds(Func):
    """A datetime column as integer microseconds since the epoch, on both databases."""

    arity = 1
    output_field = BigIntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        sql, params = compiler.compile(self.source_expressions[0])
        # EXTRACT gives an exact numeric (PostgreSQL 14+), microseconds included.
        return f"(EXTRACT(EPOCH FROM {sql}) * 1000000)::bigint", list(params)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        # Django keeps a datetime as UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'. strftime('%s')
        # is given the whole seconds only: SQLite reads a fraction to the millisecond and
        # rounds, so '…:57.999887' would count as :58. The fraction is the six digits from
        # position 21 (or none).
        return (
            f"(CAST(strftime('%%s', substr({sql}, 1, 19)) AS INTEGER) * 1000000 + CAST(substr({sql}, 21) AS INTEGER))",
            [*params, *params],
        )


class PlusSeconds(Func):
    """A datetime column plus a whole number of seconds, on both databases."""

    arity = 2
    output_field = DateTimeField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        (at, at_params), (secs, secs_params) = (compiler.compile(e) for e in self.source_expressions)
        return f"({at} + {secs} * INTERVAL '1 second')", [*at_params, *secs_params]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        (at, at_params), (secs, secs_params) = (compiler.compile(e) for e in self.source_expressions)
        # Whole seconds leave the fraction as it was: add them to the part before it, so
        # SQLite's millisecond clock never rounds it, and put the six digits back.
        return (
            f"(datetime(substr({at}, 1, 19), '+' || ({secs}) || ' seconds') || substr({at}, 20))",
            [*at_params, *secs_params, *at_params],
        )


class MicroToUsd(Func):
    """Integer micro-dollars as a decimal amount: exact numeric on PostgreSQL; on SQLite the
    money columns hold the nearest double whatever is written to them."""

    template = "(%(expressions)s / 1000000.0)"
    arity = 1
    output_field = DecimalField(max_digits=24, decimal_places=12)


@dataclass
class MeterResult:
    ran: bool
    opened: int = 0
    closed: int = 0
    billed: int = 0
    entries: int = 0


@dataclass
class _Terms:
    """What a run computes per open segment, as expressions over UsageRecord."""

    secs: Any  # whole seconds from its start to its end, or to now while open
    new_micro: Any  # what the ledger must hold for it after this run
    due: Q  # the segment moves in this run (it closes, or a second went by)


def _terms(*, now: datetime) -> _Terms:
    now_micro = (now - EPOCH) // timedelta(microseconds=1)
    span = Coalesce(EpochMicroseconds("ended_at"), Value(now_micro)) - EpochMicroseconds("started_at")
    secs = ExpressionWrapper(
        Greatest(span, Value(0), output_field=BigIntegerField()) / MICRO, output_field=BigIntegerField()
    )
    rate_micro = Cast(Round(F("rate_usd") * MICRO), BigIntegerField())  # 6 decimal places: exact
    period = Cast("rate_period_seconds", BigIntegerField())  # 2 * a month * 10,000 needs 64 bits
    # Integer division truncates on both databases; (2a + b) / 2b is a / b rounded half up.
    running_micro = (2 * rate_micro * secs + period) / (2 * period)
    billable = Greatest(F("minimum_seconds"), secs, output_field=BigIntegerField())
    final_cents = (2 * rate_micro * billable + period * CENT_MICRO) / (2 * period * CENT_MICRO)
    closing = Q(ended_at__isnull=False)
    new_micro = ExpressionWrapper(
        Case(When(closing, then=final_cents * CENT_MICRO), default=running_micro), output_field=BigIntegerField()
    )
    return _Terms(secs=secs, new_micro=new_micro, due=closing | Q(billed_seconds__lt=secs))


def _insert_from(model: type[Model], columns: dict[str, Any], source: QuerySet, *, on_conflict: str = "") -> int:
    """INSERT INTO model (columns) SELECT ... compiled from `source`; returns the row count.

    Django has no INSERT ... SELECT; the SELECT is the ORM's, compiled for this database.
    """
    select = source.order_by().values(**{f"c{i}": expr for i, expr in enumerate(columns.values())})
    sql, params = select.query.sql_with_params()
    quote = connection.ops.quote_name
    names = ", ".join(quote(model._meta.get_field(name).column) for name in columns)  # type: ignore[union-attr, arg-type]  # concrete fields
    with connection.cursor() as cur:
        cur.execute(f"INSERT INTO {quote(model._meta.db_table)} ({names}) {sql} {on_conflict}", params)
        return cur.rowcount


def _no_interrupt(step: str) -> None:
    return None


def meter_run(*, now: datetime | None = None, interrupt: Callable[[str], None] | None = None) -> MeterResult:
    """Bill every usage segment up to `now`: open new ones from the lifecycle's facts,
    close ended ones, extend open ones, and post each increment to the ledger and the
    cached balances.

    One transaction of a constant number of statements whatever the number of segments.
    On PostgreSQL an advisory lock makes an overlapping run return `ran=False` at once;
    on SQLite the transaction takes the writer lock when it begins, so runs queue. A
    repeated run posts nothing new; a run that dies half-way rolls back whole.
    `interrupt(step)` is called between statements (tests crash a run with it).
    """
    now = now or timezone.now()
    interrupt = interrupt or _no_interrupt
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [METER_LOCK_KEY])
                if not cur.fetchone()[0]:
                    return MeterResult(ran=False)
                # Compiling these few statements to machine code costs more than it saves.
                cur.execute("SET LOCAL jit = off")
                # The commit need not wait for its WAL flush (about half a 100k-segment
                # run): PostgreSQL never applies an asynchronous commit in part, and the
                # meter is level-driven, so a run lost to a crash in that instant is
                # recomputed whole by the next one from the same watermarks. Nothing is
                # charged twice or lost; no other transaction is affected.
                cur.execute("SET LOCAL synchronous_commit = off")
        mark = _mark_in_force()
        after = mark.event_id_max if mark else 0
        opened = _segments_open(now=now, after_event_id=after) + _snapshots_open(now=now, after_event_id=after)
        interrupt("opened")
        _segments_end(now=now)
        _snapshots_end(now=now)
        interrupt("closed")
        result = _segments_bill(now=now)
        interrupt("billed")
        if mark is not None:
            MeterMark.objects.filter(at__lt=mark.at).delete()
        MeterMark.objects.create(at=now, event_id_max=event_id_latest())
    result.opened = opened
    return result


def _mark_in_force() -> MeterMark | None:
    # The newest mark taken at least METER_MARK_LAG_SECONDS before the last committed run:
    # every event at or below it was committed before that run (no transaction stays open
    # an hour), so that run or an earlier one opened its segment.
    last = MeterMark.objects.order_by("-at").values_list("at", flat=True).first()
    if last is None:
        return None
    return MeterMark.objects.filter(at__lte=last - timedelta(seconds=METER_MARK_LAG_SECONDS)).order_by("-at").first()


def _segments_open(*, now: datetime, after_event_id: int) -> int:
    """A segment per new `started` (GPU) or `ended` (storage) event; returns how many."""
    facts = segment_starts(after_event_id=after_event_id, until=now).filter(
        ~Exists(UsageRecord.objects.filter(start_event_id=OuterRef("pk")))
    )
    running = Q(running=True)
    price_then = (
        GpuRate.objects.filter(gpu_type_id=OuterRef("gpu_type_id"), effective_at__lte=OuterRef("at"))
        .order_by("-effective_at", "-id")
        .values("rate_per_hour")[:1]
    )
    money = DecimalField(max_digits=16, decimal_places=6)
    storage_rate = Value(settings.GPUCLOUD_STORAGE_RATE_PER_GB_MONTH, output_field=money)
    columns = {
        "kind": Case(When(running, then=Value(UsageRecord.Kind.GPU)), default=Value(UsageRecord.Kind.STORAGE)),
        "instance": F("instance_id"),
        "user": F("owner_id"),
        "gpu_type": Case(When(running, then=F("gpu_type_id"))),
        "gpu_name": F("gpu_name"),
        "storage_gb": Case(When(~running, then=F("storage_gb"))),
        "start_event": F("id"),
        "started_at": F("at"),
        "rate_usd": Case(
            When(running, then=Coalesce(Subquery(price_then), F("gpu_type_rate_per_hour"))),
            default=ExpressionWrapper(F("storage_gb") * storage_rate, output_field=money),
            output_field=money,
        ),
        "rate_period_seconds": Case(
            When(running, then=Value(SECONDS_PER_HOUR)), default=Value(SECONDS_PER_MONTH), output_field=IntegerField()
        ),
        "minimum_seconds": Case(
            When(running, then=Value(GPU_MINIMUM_SECONDS)), default=Value(0), output_field=IntegerField()
        ),
        "billed_until": F("at"),
        "billed_usd": Value(0),
        "billed_seconds": Value(0),
        "billed_micro_usd": Value(0),
        "created_at": Value(now),
    }
    return _insert_from(UsageRecord, columns, facts)


def _segments_end(*, now: datetime) -> None:
    """Give each open segment its end event, when the timeline has one by `now`."""
    for kind, running in ((UsageRecord.Kind.GPU, True), (UsageRecord.Kind.STORAGE, False)):
        ends = segment_ends(
            instance_id=OuterRef("instance_id"), after_event_id=OuterRef("start_event_id"), running=running, until=now
        )
        UsageRecord.objects.filter(Exists(ends), kind=kind, closed_at__isnull=True, end_event__isnull=True).update(
            end_event_id=Subquery(ends.values("id")[:1]),
            # A late-noticed end may predate the start's record; a segment never runs backwards.
            ended_at=Greatest(Subquery(ends.values("at")[:1]), F("started_at")),
        )


def _snapshots_open(*, now: datetime, after_event_id: int) -> int:
    """A snapshot segment per new `snapshot-ready` event: its stored size (in GiB) times
    GPUCLOUD_SNAPSHOT_RATE_PER_GB_MONTH per 30-day month, no minimum."""
    facts = snapshot_segment_starts(after_event_id=after_event_id, until=now).filter(
        ~Exists(UsageRecord.objects.filter(start_event_id=OuterRef("pk")))
    )
    money = DecimalField(max_digits=16, decimal_places=6)
    rate = Value(settings.GPUCLOUD_SNAPSHOT_RATE_PER_GB_MONTH, output_field=money)
    columns = {
        "kind": Value(UsageRecord.Kind.SNAPSHOT),
        "instance": F("instance_id"),
        "user": F("owner_id"),
        "gpu_name": Value(""),
        "start_event": F("id"),
        "started_at": F("at"),
        # Rounded to the column's 6 decimals: $0.05 a GiB-month is exact to a few bytes.
        "rate_usd": ExpressionWrapper(F("size_bytes") * rate / Value(2**30), output_field=money),
        "rate_period_seconds": Value(SECONDS_PER_MONTH),
        "minimum_seconds": Value(0),
        "billed_until": F("at"),
        "billed_usd": Value(0),
        "billed_seconds": Value(0),
        "billed_micro_usd": Value(0),
        "created_at": Value(now),
    }
    return _insert_from(UsageRecord, columns, facts)


def _snapshots_end(*, now: datetime) -> None:
    """A snapshot segment ends at its snapshot's `snapshot-deleted` event."""
    ends = snapshot_segment_ends(
        instance_id=OuterRef("instance_id"), start_event_id=OuterRef("start_event_id"), until=now
    )
    UsageRecord.objects.filter(
        Exists(ends), kind=UsageRecord.Kind.SNAPSHOT, closed_at__isnull=True, end_event__isnull=True
    ).update(
        end_event_id=Subquery(ends.values("id")[:1]),
        ended_at=Greatest(Subquery(ends.values("at")[:1]), F("started_at")),
    )


def _segments_bill(*, now: datetime) -> MeterResult:
    """Post what each open segment owes since its watermark; close the ended ones."""
    terms = _terms(now=now)
    due = UsageRecord.objects.filter(terms.due, closed_at__isnull=True).order_by()
    closing = Q(ended_at__isnull=False)
    posted_before = LedgerEntry.objects.aggregate(last=Max("id"))["last"] or 0
    entries = _insert_from(
        LedgerEntry,
        {
            "user": F("user_id"),
            "kind": Case(
                When(kind=UsageRecord.Kind.GPU, then=Value(LedgerEntry.Kind.GPU_USAGE)),
                When(kind=UsageRecord.Kind.SNAPSHOT, then=Value(LedgerEntry.Kind.SNAPSHOT)),
                default=Value(LedgerEntry.Kind.STORAGE),
            ),
            "amount_usd": MicroToUsd(F("billed_micro_usd") - terms.new_micro),  # a charge is negative
            "idempotency_key": Concat(
                Value("usage:"),
                Cast("id", CharField()),
                Value(":"),
                Case(When(closing, then=Value("final")), default=Cast(terms.secs, CharField())),
                output_field=CharField(),
            ),
            "at": Value(now),
            "usage": F("id"),
            "stripe_id": Value(""),
            "payment_intent_id": Value(""),
            "reason": Value(""),
        },
        due.exclude(billed_micro_usd=terms.new_micro),
    )
    # The cached balances move by exactly what this run posted: usage entries above the
    # ledger's last id when it began (no other run posts usage meanwhile: the lock).
    posted = LedgerEntry.objects.filter(id__gt=posted_before, at=now, usage__isnull=False).order_by()
    _insert_from(
        BillingAccount,
        {"user": F("user_id"), "balance_usd": Value(0), "stripe_customer_id": Value(""), "created_at": Value(now)},
        posted.distinct(),
        on_conflict="ON CONFLICT DO NOTHING",  # most users have one already
    )
    per_user = posted.filter(user_id=OuterRef("user_id")).values("user_id").annotate(total=Sum("amount_usd"))
    BillingAccount.objects.filter(user_id__in=posted.values("user_id")).update(
        balance_usd=F("balance_usd") + Subquery(per_user.values("total"))
    )
    closed = due.filter(closing).update(
        billed_seconds=terms.secs,
        billed_micro_usd=terms.new_micro,
        billed_usd=MicroToUsd(terms.new_micro),
        billed_until=F("ended_at"),
        duration_seconds=terms.secs,
        cost_usd=MicroToUsd(terms.new_micro),
        closed_at=Value(now, output_field=DateTimeField()),
    )
    extended = due.filter(ended_at__isnull=True).update(
        billed_seconds=terms.secs,
        billed_micro_usd=terms.new_micro,
        billed_usd=MicroToUsd(terms.new_micro),
        billed_until=PlusSeconds("started_at", terms.secs),
    )
    return MeterResult(ran=True, closed=closed, billed=closed + extended, entries=entries)
