"""Real containers (the test image on the real Docker engine) are billed for the seconds
they really ran: a stopped one to its stop, a killed one to the container's finish time
rather than to when the reconciler noticed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import selectors, services
from billing.models import UsageRecord
from instances.models import Instance
from instances.services import instance_launch, instance_stop
from instances.services.provision import instance_provision, instance_stop_execute
from instances.services.reconcile import host_reconcile
from tests.billing.helpers import credit
from tests.factories import TemplateFactory

pytestmark = pytest.mark.docker


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=120)
    return done.stdout


@pytest.fixture
def launched(alice, this_host) -> Iterator[Instance]:
    """A running instance of the test image, provisioned in this process on this host."""
    credit(alice, "50.00")
    instance = instance_launch(
        user=alice, template=TemplateFactory(), gpu_type="rtx-5090", storage_gb=10, access=["ssh"]
    )
    instance = instance_provision(instance_id=instance.pk)
    assert instance.status == Instance.Status.RUNNING, instance.last_error
    yield instance
    docker("rm", "-f", instance.container_name)
    docker("network", "rm", instance.container_name)


def gpu_segment(instance: Instance) -> UsageRecord:
    return UsageRecord.objects.get(instance=instance, kind="gpu")


def assert_charged_exactly(usage: UsageRecord) -> None:
    seconds = (usage.ended_at - usage.started_at) // timedelta(seconds=1)
    assert usage.duration_seconds == seconds
    assert usage.cost_usd == services.money(Decimal("1.49") * max(60, seconds) / 3600)
    assert sum(e.amount_usd for e in usage.entries.all()) == -usage.cost_usd


def test_an_instance_that_ran_about_70_s_is_charged_its_real_seconds(launched, alice):
    started = launched.events.get(kind="started").at
    for _ in range(7):  # metering while it runs, as beat does
        time.sleep(10)
        services.meter_run()
    assert gpu_segment(launched).closed_at is None

    stop_asked = timezone.now()
    instance_stop(instance=launched)
    instance = instance_stop_execute(instance_id=launched.pk)
    stop_done = timezone.now()
    assert instance.status == Instance.Status.STOPPED
    services.meter_run()
    services.meter_run()

    usage = gpu_segment(launched)
    assert usage.started_at == started
    assert stop_asked <= usage.ended_at <= stop_done, "ended when the container really stopped"
    assert usage.duration_seconds >= 70
    assert_charged_exactly(usage)
    # Storage of the stopped instance has begun; the GPU pays nothing more.
    assert UsageRecord.objects.filter(instance=launched, kind="storage", closed_at__isnull=True).exists()
    assert selectors.balance_get(user=alice) == selectors.balance_from_ledger(user=alice)


def test_a_container_killed_out_of_band_is_charged_to_its_finish_time(launched, this_host):
    services.meter_run()
    docker("kill", launched.container_name)
    killed = timezone.now()
    finished = docker("inspect", "-f", "{{.State.FinishedAt}}", launched.container_name).strip()
    assert finished, "the container has a finish time"
    assert not finished.startswith("0001"), "the container has a finish time"

    # The reconciler notices 20 s late; metering meanwhile bills past the death (the
    # meter is told the time rather than the test waiting it out).
    noticed = timezone.now() + timedelta(seconds=20)
    services.meter_run(now=noticed)
    host_reconcile(host=this_host)
    services.meter_run(now=noticed)

    usage = gpu_segment(launched)
    assert usage.ended_at <= killed, "charged to the container's finish time"
    assert usage.ended_at < noticed - timedelta(seconds=15), "not to when the reconciler noticed"
    assert usage.ended_at.isoformat()[:19] == finished[:19]
    assert_charged_exactly(usage)
    launched.refresh_from_db()
    assert launched.status in (Instance.Status.FAILED, Instance.Status.STOPPED)
