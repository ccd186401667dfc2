"""GPU-fault credits from the lifecycle's facts on a controllable clock: the seconds from
the fault's first sign to the segment's end, to the cent, once — also when several runs
post at the same moment — and only for a fault the policy stopped the instance for, on
the GPU the segment ran on."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from billing import services
from billing.models import FaultCredit, LedgerEntry, UsageRecord
from instances.models import GpuHealthEvent
from tests.billing.helpers import Clock, event, instance_for
from tests.factories import GpuFactory

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def fault(
    gpu, instance, at: datetime, *, code: str = "xid-79", stops: bool = True, seen: datetime | None = None
) -> GpuHealthEvent:
    """A fault as instances.services.health records it (the contract billing reads): its
    first sign `at`, read at `seen` (when it was read first: `at` unless it began earlier)."""
    return GpuHealthEvent.objects.create(
        gpu=gpu, episode=0, kind="fault", code=code, source="watch", stops=stops, at=at, last_seen_at=seen or at,
        instance=instance,
    )  # fmt: skip


def segment(alice, gpu, clock: Clock, *, seconds: float):
    instance = instance_for(alice, gpu.gpu_type)
    started = clock.now
    event(instance, "started", started, gpu=gpu.uuid)
    event(instance, "ended", clock.advance(seconds))
    return instance, started


def test_the_seconds_from_the_fault_to_the_end_are_credited_once_to_the_cent(alice, gpu_types):
    clock = Clock(T0)
    gpu = GpuFactory(gpu_type=gpu_types["rtx-5090"])  # $1.49 an hour
    instance, started = segment(alice, gpu, clock, seconds=3600.5)
    behind = [fault(gpu, instance, started + timedelta(seconds=1234.7))]
    behind.append(fault(gpu, instance, started + timedelta(seconds=1300), code="not-answering"))
    assert services.gpu_fault_credits_post() == []  # the segment is not closed yet: nothing to price
    services.meter_run(now=clock.advance(5))

    (credit,) = services.gpu_fault_credits_post()
    # 3600 whole seconds, 1234 of them healthy: 2366 s x $1.49/h = $0.979244... -> $0.98.
    assert (credit.credited_seconds, credit.amount_usd) == (2366, Decimal("0.98"))
    assert credit.fault_at == behind[0].at
    assert set(credit.events.all()) == set(behind)
    entry = credit.entry
    assert (entry.kind, entry.amount_usd, entry.user) == ("gpu-fault", Decimal("0.98"), alice)
    assert "xid-79" in entry.reason
    assert UsageRecord.objects.get(instance=instance, kind="gpu").cost_usd == Decimal("1.49")
    assert services.gpu_fault_credits_post() == []
    services.meter_run(now=clock.advance(30))
    assert services.gpu_fault_credits_post() == []
    assert LedgerEntry.objects.filter(kind="gpu-fault").count() == 1


def test_warnings_and_faults_of_another_gpu_are_not_credited(alice, gpu_types):
    clock = Clock(T0)
    gpu, sick = GpuFactory(gpu_type=gpu_types["rtx-5090"]), GpuFactory(gpu_type=gpu_types["rtx-5090"])
    instance, started = segment(alice, gpu, clock, seconds=600)
    fault(gpu, instance, started + timedelta(seconds=10), code="thermal-slowdown", stops=False)
    # The gate found `sick` bad before this instance's container was made on `gpu`.
    fault(sick, instance, started - timedelta(seconds=2), code="ecc-uncorrectable")
    services.meter_run(now=clock.advance(5))
    assert services.gpu_fault_credits_post() == []
    assert not FaultCredit.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_runs_posting_at_the_same_moment_credit_once(alice, gpu_types):
    clock = Clock(T0)
    gpu = GpuFactory(gpu_type=gpu_types["rtx-pro-6000"])
    instance, started = segment(alice, gpu, clock, seconds=900)
    # Read 10 s into the segment, the fault had begun before it: all of it is credited.
    fault(gpu, instance, started - timedelta(hours=1), seen=started + timedelta(seconds=10))
    services.meter_run(now=clock.advance(5))
    barrier, posted, errors = threading.Barrier(4), [], []

    def run() -> None:
        try:
            barrier.wait()
            posted.extend(services.gpu_fault_credits_post())
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(posted) == 1
    usage = UsageRecord.objects.get(instance=instance, kind="gpu")
    assert posted[0].amount_usd == usage.cost_usd == Decimal("0.75")  # 900 s at $2.99/h, all credited
    assert LedgerEntry.objects.filter(kind="gpu-fault").count() == 1
