"""The GPU health gate and watch, on the simulated inventory told to report faults
(the file `manage.py simulate_gpu_fault` writes, read by the real worker), real
containers and a real Celery worker.

- a GPU with uncorrectable ECC errors is never rented: quarantined at the gate, the
  instance moved to a healthy GPU, or failed with `instances:no-healthy-gpu`;
- XID 79 while rented stops the instance and credits its customer from the fault's
  time, to the cent, once, pointing at the health events;
- thermal throttling warns and keeps it running; an operator's return to service
  makes the GPU rentable again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from billing import selectors as billing_selectors
from billing import services as billing
from billing.models import FaultCredit, LedgerEntry, UsageRecord
from instances import selectors
from instances.errors import NoCapacity
from instances.host.inventory import host_sync
from instances.models import Gpu, GpuHealthEvent, GpuHealthState, Host, Instance, InstanceEvent
from instances.services import instance_launch, instance_start
from instances.services.health import gpu_health_check
from instances.tasks import gpu_health_host
from tests.billing.helpers import credit
from tests.containers import inspect, labelled_containers, wait_for_status
from tests.factories import GpuTypeFactory, TemplateFactory
from tests.processes import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.celery]

Kind = InstanceEvent.Kind
# $36 an hour is a cent a second: every credited second shows in the cents.
RATE = Decimal("36.00")
TWO_OF_A_KIND = [
    {"index": 0, "name": "NVIDIA GeForce RTX 5090", "sku": "rtx-5090", "memory_mb": 32607},
    {"index": 1, "name": "NVIDIA GeForce RTX 5090", "sku": "rtx-5090", "memory_mb": 32607},
]


@pytest.fixture(autouse=True)
def _healthy_fleet() -> Iterator[None]:
    call_command("simulate_gpu_fault", clear_all=True)
    yield
    call_command("simulate_gpu_fault", clear_all=True)


@pytest.fixture
def rtx(db):
    return GpuTypeFactory(sku="rtx-5090", display_name="RTX 5090", rate_per_hour=RATE)


@pytest.fixture
def one_gpu_host(rtx) -> Host:
    return host_sync(name=settings.GPUCLOUD_HOST_NAME, source="simulated", declared=TWO_OF_A_KIND[:1]).host


@pytest.fixture
def two_gpu_host(rtx) -> Host:
    return host_sync(name=settings.GPUCLOUD_HOST_NAME, source="simulated", declared=TWO_OF_A_KIND).host


def launch(user) -> Instance:
    return instance_launch(user=user, template=TemplateFactory(), gpu_type="rtx-5090", storage_gb=10, access=["ssh"])


def gpu(host: Host, index: int) -> Gpu:
    return Gpu.objects.get(host=host, index=index)


def quarantined(g: Gpu) -> bool:
    return GpuHealthState.objects.filter(gpu=g, quarantined=True).exists()


def free(sku: str = "rtx-5090") -> int:
    return next(r for r in selectors.availability() if r["sku"] == sku)["free"]


def health_check(host: Host) -> None:
    """What beat does every GPUCLOUD_GPU_HEALTH_SECONDS: the check, on the host's own worker."""
    gpu_health_host.apply_async(kwargs={"host_id": host.pk}, queue=host.queue).forget()


def test_a_gpu_with_uncorrectable_ecc_is_never_rented_another_is_taken(celery_worker, alice, two_gpu_host):
    credit(alice, "50.00")
    sick = gpu(two_gpu_host, 0)
    call_command("simulate_gpu_fault", gpu=0, ecc_volatile=2)

    instance = launch(alice)
    assert instance.gpu == sick  # the scheduler knew nothing yet: the gate must catch it
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error

    assert instance.gpu == gpu(two_gpu_host, 1)
    # The only container ever made got the healthy GPU (a simulated GPU is its index).
    assert labelled_containers(instance=instance.public_id) == [instance.container_id]
    assert "NVIDIA_VISIBLE_DEVICES=1" in inspect(instance.container_id)["Config"]["Env"]
    assert quarantined(sick)
    fault = GpuHealthEvent.objects.get(gpu=sick)
    assert (fault.code, fault.source, fault.stops, fault.instance) == ("ecc-uncorrectable", "gate", True, instance)
    note = instance.events.get(kind=Kind.GPU_FAULT)
    assert note.data["faults"] == ["ecc-uncorrectable"]
    assert note.data["moved_to"] == instance.gpu.uuid
    # One GPU of the two is busy, the other quarantined: nothing is free to rent.
    assert free() == 0
    with pytest.raises(NoCapacity):
        launch(alice)


def test_when_no_healthy_gpu_is_left_the_launch_fails_with_its_code(celery_worker, alice, one_gpu_host):
    credit(alice, "50.00")
    call_command("simulate_gpu_fault", gpu=0, ecc_volatile=1, ecc_aggregate=1)

    instance = wait_for_status(launch(alice), "running", "failed")
    assert instance.status == "failed"
    assert "failed its health check (ecc-uncorrectable)" in instance.last_error
    assert instance.events.get(kind=Kind.FAILED).data["code"] == "instances:no-healthy-gpu"
    assert labelled_containers(instance=instance.public_id) == []  # no container was ever made
    assert instance.gpu is None
    assert not instance.ports.exists()
    assert quarantined(gpu(one_gpu_host, 0))
    assert not UsageRecord.objects.filter(instance=instance).exists()  # nothing to pay


def test_xid_79_while_rented_stops_the_instance_and_credits_from_the_fault_once(
    celery_worker, client, alice, one_gpu_host
):
    credit(alice, "50.00")
    instance = wait_for_status(launch(alice), "running", "failed")
    assert instance.status == "running", instance.last_error
    started = instance.events.get(kind=Kind.STARTED).at
    wait_until(lambda: timezone.now() >= started + timedelta(seconds=8), timeout=15, what="a few healthy seconds")

    # The fault began a little before it was read (what NVML's XID events carry for real).
    fault_at = timezone.now() - timedelta(seconds=3)
    call_command("simulate_gpu_fault", gpu=0, xid=[79], since=fault_at.isoformat())
    health_check(one_gpu_host)
    instance = wait_for_status(instance, "stopped")
    for _ in range(3):  # the fault is seen again and again: nothing more is recorded or credited
        health_check(one_gpu_host)
    wait_until(
        lambda: GpuHealthEvent.objects.get(gpu=gpu(one_gpu_host, 0)).times_seen >= 4, timeout=30, what="4 checks"
    )

    sick = gpu(one_gpu_host, 0)
    assert quarantined(sick)
    fault = GpuHealthEvent.objects.get(gpu=sick)
    assert (fault.code, fault.source, fault.stops, fault.instance, fault.at) == (
        "xid-79",
        "watch",
        True,
        instance,
        fault_at,
    )
    # The customer is told: on the timeline (the instance page shows it) and why it stopped.
    told = instance.events.get(kind=Kind.GPU_FAULT)
    assert told.data == {"health_event": fault.pk, "code": "xid-79", "since": fault_at.isoformat(), "stops": True}
    assert "stopped" in told.message
    assert instance.events.get(kind=Kind.STOP_REQUESTED).message == "GPU fault: xid-79"
    client.force_login(alice)
    page = client.get(reverse("web:instance", args=[instance.public_id])).content.decode()
    assert "GPU health" in page
    assert "the driver reported the critical XID 79" in page

    for _ in range(3):  # beat's meter and credit jobs, run more than once
        billing.meter_run()
        billing.gpu_fault_credits_post()
    usage = UsageRecord.objects.get(instance=instance, kind="gpu")
    entry = LedgerEntry.objects.get(user=alice, kind=LedgerEntry.Kind.GPU_FAULT)
    assert entry.idempotency_key == f"gpu-fault:{usage.pk}"
    # From the fault's time to the segment's end, in whole seconds, a cent a second.
    seconds = (usage.ended_at - started) // timedelta(seconds=1) - (fault_at - started) // timedelta(seconds=1)
    assert seconds >= 3
    assert entry.amount_usd == Decimal("0.01") * seconds
    assert entry.amount_usd < usage.cost_usd  # the healthy seconds are still paid
    fault_credit = FaultCredit.objects.get(usage=usage)
    assert (fault_credit.entry, fault_credit.fault_at, fault_credit.credited_seconds) == (entry, fault_at, seconds)
    assert list(fault_credit.events.all()) == [fault]
    assert billing_selectors.balance_get(user=alice) == billing_selectors.balance_from_ledger(user=alice)
    # What the customer spent on that GPU is what the healthy seconds cost.
    spent = billing_selectors.spend_since(user=alice, since=started - timedelta(minutes=1))
    storage = -sum(e.amount_usd for e in LedgerEntry.objects.filter(user=alice, kind=LedgerEntry.Kind.STORAGE))
    assert spent == usage.cost_usd - entry.amount_usd + storage
    # Started again, it cannot land on the quarantined GPU (the host's only one).
    with pytest.raises(NoCapacity):
        instance_start(instance=instance)


def test_thermal_throttling_warns_and_keeps_the_instance_running(celery_worker, alice, one_gpu_host):
    credit(alice, "50.00")
    instance = wait_for_status(launch(alice), "running", "failed")
    assert instance.status == "running", instance.last_error

    call_command("simulate_gpu_fault", gpu=0, throttle=["thermal"], temperature=91, slowdown_temperature=90)
    health_check(one_gpu_host)
    told = wait_until(lambda: instance.events.filter(kind=Kind.GPU_FAULT).count() == 2, timeout=30, what="two warnings")
    assert told
    warnings = {e.data["code"]: e for e in instance.events.filter(kind=Kind.GPU_FAULT)}
    assert set(warnings) == {"thermal-slowdown", "temperature-high"}
    assert all(not e.data["stops"] and "keeps running" in e.message for e in warnings.values())
    health_check(one_gpu_host)
    wait_until(lambda: GpuHealthEvent.objects.filter(times_seen__gte=2).count() == 2, timeout=30, what="2nd check")

    instance.refresh_from_db()
    assert instance.status == "running"
    assert not instance.events.filter(kind=Kind.STOP_REQUESTED).exists()
    assert quarantined(gpu(one_gpu_host, 0))  # no new rental while it runs hot
    billing.meter_run()
    assert billing.gpu_fault_credits_post() == []


def test_return_to_service_is_recorded_and_makes_the_gpu_rentable(client, olga, alice, one_gpu_host):
    sick = gpu(one_gpu_host, 0)
    call_command("simulate_gpu_fault", gpu=0, row_remap_failure=True)
    gpu_health_check(host=one_gpu_host)
    assert quarantined(sick)
    assert free() == 0
    credit(alice, "50.00")
    with pytest.raises(NoCapacity):
        launch(alice)

    call_command("simulate_gpu_fault", gpu=0, clear=True)  # the operator fixed it
    state = GpuHealthState.objects.get(gpu=sick)
    client.force_login(olga)
    url = "/admin/instances/gpuhealthstate/"
    page = client.get(f"{url}{sick.pk}/change/")
    assert page.status_code == HTTPStatus.OK
    assert b"row-remap-failure" in page.content  # why it is quarantined, and its history
    done = client.post(url, {"action": "return_to_service", "_selected_action": [state.pk]}, follow=True)
    assert done.status_code == HTTPStatus.OK

    assert not quarantined(sick)
    assert free() == 1
    returned = GpuHealthEvent.objects.get(gpu=sick, kind="returned")
    assert returned.actor.username == "olga"
    assert "row-remap-failure" in returned.message
    assert launch(alice).gpu == sick
    gpu_health_check(host=one_gpu_host)  # healthy now: stays in service
    assert not quarantined(sick)
