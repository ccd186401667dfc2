from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext

from billing import selectors, services
from billing.models import GpuRate, LedgerEntry, UsageRecord
from billing.services.prices import EPOCH
from instances.models import GpuType
from tests.billing.helpers import Clock, credit, event, instance_for

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def ledger_total(usage: UsageRecord) -> Decimal:
    return sum((e.amount_usd for e in usage.entries.all()), Decimal(0))


def test_a_closed_segment_costs_its_seconds_at_the_rate_when_it_opened(alice, gpu_types, clock):
    instance = instance_for(alice, gpu_types["rtx-5090"])
    event(instance, "started", clock.now)
    services.meter_run(now=clock.advance(30))
    services.meter_run(now=clock.advance(45))
    services.gpu_type_rate_set(gpu_type=gpu_types["rtx-5090"], rate_per_hour=Decimal("9.99"), now=clock.advance(5))
    event(instance, "ended", clock.advance(3620.4))
    services.meter_run(now=clock.advance(10))

    usage = UsageRecord.objects.get(kind="gpu")
    assert usage.duration_seconds == 3700  # 30 + 45 + 5 + 3620 whole seconds
    assert usage.rate_usd == Decimal("1.49")
    assert usage.cost_usd == Decimal("1.53")  # 1.49 * 3700 / 3600 = 1.531388…
    assert ledger_total(usage) == Decimal("-1.53")


def test_a_segment_keeps_the_gpu_it_ran_on(alice, gpu_types, this_host, clock):
    gpu = this_host.gpus.get(index=1)
    instance = instance_for(alice, gpu_types["rtx-pro-6000"])
    event(instance, "started", clock.now, gpu=gpu.uuid)
    event(instance, "ended", clock.advance(100))
    services.meter_run(now=clock.advance(1))
    assert UsageRecord.objects.get(kind="gpu").gpu_name == gpu.name


def test_a_short_run_pays_the_one_minute_minimum(alice, gpu_types, clock):
    instance = instance_for(alice, gpu_types["rtx-pro-6000"])
    event(instance, "started", clock.now)
    services.meter_run(now=clock.advance(10))
    event(instance, "ended", clock.advance(2))
    services.meter_run(now=clock.advance(1))
    usage = UsageRecord.objects.get(kind="gpu")
    assert usage.cost_usd == Decimal("0.05")  # 2.99 * 60 / 3600 = 0.04983…
    assert ledger_total(usage) == Decimal("-0.05")
    assert usage.entries.filter(idempotency_key=f"usage:{usage.pk}:final").exists()


def test_a_repeated_run_charges_nothing_more(alice, gpu_types, clock):
    instance = instance_for(alice, gpu_types["rtx-5090"])
    event(instance, "started", clock.now)
    services.meter_run(now=clock.advance(600))
    before = list(LedgerEntry.objects.values_list("idempotency_key", "amount_usd"))
    again = services.meter_run(now=clock.now)
    assert again.ran
    assert again.entries == 0
    assert list(LedgerEntry.objects.values_list("idempotency_key", "amount_usd")) == before
    # 1.49 * 600 / 3600 = 0.2483333…: open segments are carried in whole micro-dollars
    assert selectors.balance_get(user=alice) == Decimal("-0.248333")


def test_a_run_crashed_half_way_leaves_nothing_and_the_next_run_bills_everything(alice, gpu_types, clock):
    instance = instance_for(alice, gpu_types["rtx-5090"])
    event(instance, "started", clock.now)
    services.meter_run(now=clock.advance(120))
    event(instance, "ended", clock.advance(60))

    def crash(step: str) -> None:
        """Fault injection: the process dies between two statements of a run."""
        if step == "closed":
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError):
        services.meter_run(now=clock.advance(5), interrupt=crash)
    usage = UsageRecord.objects.get()
    assert usage.closed_at is None
    assert usage.end_event_id is None
    assert usage.entries.count() == 1

    services.meter_run(now=clock.now)
    usage.refresh_from_db()
    assert usage.cost_usd == Decimal("0.07")  # 1.49 * 180 / 3600 = 0.0745 → half up
    assert ledger_total(usage) == Decimal("-0.07")


def test_a_container_found_dead_late_is_charged_to_its_finish_time(alice, gpu_types, clock):
    instance = instance_for(alice, gpu_types["rtx-5090"])
    started = clock.now
    event(instance, "started", started)
    services.meter_run(now=clock.advance(3600))  # billed a full hour so far
    # The reconciler notices now that the container died 40 minutes in.
    event(instance, "ended", started.replace(minute=40))
    services.meter_run(now=clock.advance(30))
    usage = UsageRecord.objects.get(kind="gpu")
    assert usage.duration_seconds == 2400
    assert ledger_total(usage) == -services.money(Decimal("1.49") * 2400 / 3600)
    assert selectors.balance_get(user=alice) == selectors.balance_from_ledger(user=alice)


def test_a_stopped_instance_pays_storage_until_started_again(alice, gpu_types, clock):
    instance = instance_for(alice, gpu_types["rtx-5090"], storage_gb=100)
    event(instance, "started", clock.now)
    event(instance, "ended", clock.advance(600))
    services.meter_run(now=clock.advance(86400))
    storage = UsageRecord.objects.get(kind="storage")
    assert storage.closed_at is None
    event(instance, "started", clock.advance(86400 * 2))
    services.meter_run(now=clock.advance(1))
    storage.refresh_from_db()
    # 100 GB * $0.05 per GB-month (a month = 30 days) for 3 days = $0.50.
    assert storage.duration_seconds == 3 * 86400
    assert storage.cost_usd == Decimal("0.50")
    assert ledger_total(storage) == Decimal("-0.50")


def test_storage_ends_at_termination(alice, gpu_types, clock):
    instance = instance_for(alice, gpu_types["rtx-5090"], storage_gb=30)
    event(instance, "started", clock.now)
    event(instance, "ended", clock.advance(60))
    event(instance, "terminated", clock.advance(15 * 86400))
    services.meter_run(now=clock.advance(86400))
    storage = UsageRecord.objects.get(kind="storage")
    assert storage.cost_usd == Decimal("0.75")  # 30 * 0.05 * 15/30
    services.meter_run(now=clock.advance(86400))
    assert ledger_total(storage) == Decimal("-0.75")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serialises writers: a second run waits")
def test_an_overlapping_run_is_skipped(alice, gpu_types, clock, django_db_blocker):
    """A second connection holding the meter lock stands in for a run in progress."""
    import psycopg

    instance_for(alice, gpu_types["rtx-5090"])
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=False) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", [services.METER_LOCK_KEY])
        assert services.meter_run(now=clock.now).ran is False
    assert services.meter_run(now=clock.now).ran is True


def test_a_run_costs_the_same_number_of_queries_for_1_or_40_segments(alice, bob, gpu_types, clock):
    def queries_for(count: int, user) -> int:
        for _ in range(count):
            instance = instance_for(user, gpu_types["rtx-5090"])
            event(instance, "started", clock.now)
        services.meter_run(now=clock.advance(30))
        with CaptureQueriesContext(connection) as ctx:
            services.meter_run(now=clock.advance(30))
        return len(ctx.captured_queries)

    small = queries_for(1, alice)
    large = queries_for(40, bob)
    assert small == large
    assert LedgerEntry.objects.filter(user=bob).count() == 80


def test_balance_is_the_sum_of_the_ledger(alice, gpu_types, clock):
    credit(alice, "20.00")
    for i in range(3):
        instance = instance_for(alice, gpu_types["rtx-pro-6000"])
        event(instance, "started", clock.advance(i))
    services.meter_run(now=clock.advance(777))
    assert selectors.balance_get(user=alice) == selectors.balance_from_ledger(user=alice)
    assert selectors.balance_get(user=alice) < Decimal("20.00")


def test_a_rate_change_is_saved_through_the_model_and_recorded_once(gpu_types, clock):
    saved = []

    def seen(sender, instance, **kwargs):
        saved.append(instance.rate_per_hour)

    post_save.connect(seen, sender=GpuType, dispatch_uid="test-rate-saved")
    try:
        services.gpu_type_rate_set(gpu_type=gpu_types["rtx-5090"], rate_per_hour=Decimal("1.99"), now=clock.now)
    finally:
        post_save.disconnect(dispatch_uid="test-rate-saved", sender=GpuType)
    assert saved == [Decimal("1.99")], "post_save fires, so the API cache hears of it"
    history = GpuRate.objects.filter(gpu_type=gpu_types["rtx-5090"]).order_by("effective_at")
    assert [(r.rate_per_hour, r.effective_at) for r in history] == [
        (Decimal("1.49"), EPOCH),
        (Decimal("1.99"), clock.now),
    ]
