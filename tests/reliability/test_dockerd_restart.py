"""`dockerd` is restarted while instances run.

The engine restarted is one of the test session's own (see conftest.Dockerd), so the
shared engine and everyone's containers on it are untouched; it is a real dockerd,
stopped with SIGTERM as an operator's restart does and started again. Twice:

1. with live restore on: containers outlive the engine. One of them dies while the
   engine is down (its process is SIGKILLed); the other survives.
2. with live restore off: the engine stops every container as it shuts down.

After each, one reconciler run restores the truth: a container that died is billed to
its finish time as the engine reports it, one that survived keeps its one open segment
(no second `started`, no `ended`, its billing watermark moving on without a gap).
"""

from __future__ import annotations

import os
import signal

import pytest
from django.utils import timezone

from billing.models import LedgerEntry, UsageRecord
from billing.services import meter_run
from instances import services
from instances.host.runtime import _parse_time
from instances.models import Instance, InstanceEvent
from instances.services import reconcile
from tests.containers import wait_for_status
from tests.factories import TemplateFactory
from tests.reliability.helpers import DOCKERD_URL, assert_nothing_leaked, containers_on, inspect_on

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.dockerd_restart]


def _container(instance: Instance) -> dict:
    (container,) = containers_on(DOCKERD_URL, instance=instance.public_id)
    return inspect_on(DOCKERD_URL, container)


def _segments(instance: Instance) -> list[str]:
    return list(
        InstanceEvent.objects.filter(instance=instance, kind__in=["started", "ended"]).values_list("kind", flat=True)
    )


def _billed(instance: Instance) -> UsageRecord:
    (usage,) = UsageRecord.objects.filter(instance=instance, kind="gpu")
    return usage


def test_one_reconciler_run_after_a_dockerd_restart_bills_the_dead_to_their_finish_and_the_living_on(
    alice, rel_host, private_dockerd, start_worker
):
    template = TemplateFactory()
    start_worker()
    dies, survives = (
        services.instance_launch(user=alice, template=template, gpu_type=sku, storage_gb=20, access=["ssh"])
        for sku in ("rtx-5090", "rtx-pro-6000")
    )
    for instance in (dies, survives):
        assert wait_for_status(instance, "running", "failed").status == "running", instance.last_error
    meter_run()
    watermark = _billed(survives).billed_until
    pid = _container(dies)["State"]["Pid"]

    # 1. Live restore on: the engine goes away; one container dies meanwhile.
    private_dockerd.restart(live_restore=True, while_down=lambda: os.kill(pid, signal.SIGKILL))
    back_at = timezone.now()
    dead = _container(dies)["State"]
    assert not dead["Running"]
    assert _container(survives)["State"]["Running"]

    report = reconcile.host_reconcile(host=rel_host)
    assert report.instances_ended == [dies.public_id]
    dies.refresh_from_db()
    assert dies.status == "failed"
    assert "137" in dies.last_error
    finished_at = _parse_time(dead["FinishedAt"])
    assert InstanceEvent.objects.get(instance=dies, kind="ended").at == finished_at <= back_at
    survives.refresh_from_db()
    assert survives.status == "running"
    assert _segments(survives) == ["started"]

    meter_run()
    usage = _billed(dies)
    assert usage.ended_at == finished_at
    assert usage.closed_at is not None
    assert sum(e.amount_usd for e in LedgerEntry.objects.filter(usage=usage)) == -usage.cost_usd
    living = _billed(survives)
    assert living.ended_at is None
    assert living.billed_until > watermark
    # One segment from the one `started`, billed up to now: nothing skipped, nothing twice.
    assert living.started_at == InstanceEvent.objects.get(instance=survives, kind="started").at
    assert containers_on(DOCKERD_URL, instance=dies.public_id) == []
    assert_nothing_leaked(host=rel_host, docker_host=DOCKERD_URL)

    # 2. Live restore off: the engine stops the survivor as it shuts down.
    private_dockerd.restart(live_restore=False)
    back_at = timezone.now()
    stopped = _container(survives)["State"]
    assert not stopped["Running"]
    report = reconcile.host_reconcile(host=rel_host)
    assert report.instances_ended == [survives.public_id]
    survives.refresh_from_db()
    assert survives.status in ("stopped", "failed")
    assert _segments(survives) == ["started", "ended"]
    finished_at = _parse_time(stopped["FinishedAt"])
    assert InstanceEvent.objects.get(instance=survives, kind="ended").at == finished_at <= back_at
    meter_run()
    living.refresh_from_db()
    assert living.ended_at == finished_at
    assert living.closed_at is not None
    assert sum(e.amount_usd for e in LedgerEntry.objects.filter(usage=living)) == -living.cost_usd
    assert_nothing_leaked(host=rel_host, docker_host=DOCKERD_URL)
