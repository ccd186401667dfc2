"""Placement across two hosts (rows only: PostgreSQL, no worker): spread and pack, CPU
and RAM never over-committed, the template's image preferred, unreachable and draining
hosts left out, cordoned GPUs rented to nobody."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from instances import selectors
from instances.errors import NoCapacity
from instances.models import Gpu, GpuType, Host, Instance, InstanceEvent
from instances.registry_models import HostImage
from instances.services import instance_launch
from instances.services.fleet import gpus_cordon, host_drain, host_undrain
from instances.services.liveness import hosts_liveness

pytestmark = pytest.mark.django_db


def launch(user, template, gpu_type="rtx-5090"):
    return instance_launch(user=user, template=template.slug, gpu_type=gpu_type, storage_gb=20, access=["ssh"])


def test_spread_puts_each_launch_on_the_least_loaded_host(settings, alice, two_hosts, fleet_template):
    settings.GPUCLOUD_PLACEMENT_POLICY = "spread"
    first = launch(alice, fleet_template, "rtx-5090")
    second = launch(alice, fleet_template, "rtx-pro-6000")
    assert {first.host, second.host} == set(two_hosts)


def test_pack_fills_one_host_before_the_next(settings, alice, two_hosts, fleet_template):
    settings.GPUCLOUD_PLACEMENT_POLICY = "pack"
    first = launch(alice, fleet_template, "rtx-5090")
    second = launch(alice, fleet_template, "rtx-pro-6000")
    assert first.host == second.host
    # That host has no RTX 5090 left: the next one goes to the other host.
    third = launch(alice, fleet_template, "rtx-5090")
    assert third.host != first.host


def test_a_host_never_takes_more_cpu_or_ram_than_it_declares(settings, alice, two_hosts, fleet_template):
    settings.GPUCLOUD_PLACEMENT_POLICY = "pack"
    a, b = two_hosts
    five, pro = GpuType.objects.get(sku="rtx-5090"), GpuType.objects.get(sku="rtx-pro-6000")
    # a has the CPU of one RTX 5090 instance; b the RAM of one of each type, less a MiB.
    Host.objects.filter(pk=a.pk).update(cpu_capacity=five.cpu_limit)
    Host.objects.filter(pk=b.pk).update(ram_capacity_mb=five.ram_limit_mb + pro.ram_limit_mb - 1)
    assert launch(alice, fleet_template, "rtx-5090").host == a
    # Packing would put it on a, beside the first: a's CPU is spoken for.
    assert launch(alice, fleet_template, "rtx-pro-6000").host == b
    # b's RTX 5090 is free, but b's RAM is not.
    with pytest.raises(NoCapacity):
        launch(alice, fleet_template, "rtx-5090")
    assert Instance.objects.filter(host=b).count() == 1


def test_a_host_holding_the_template_image_is_preferred(settings, alice, two_hosts, fleet_template):
    settings.GPUCLOUD_PLACEMENT_POLICY = "spread"
    _a, b = two_hosts
    HostImage.objects.create(host=b, image=fleet_template.image, present=True)
    assert launch(alice, fleet_template).host == b


def test_an_unreachable_host_takes_nothing_and_leaves_availability(alice, two_hosts, fleet_template):
    a, b = two_hosts
    Host.objects.filter(pk=a.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    report = hosts_liveness()
    assert report.unreachable == [a.name]
    a.refresh_from_db()
    assert a.status == Host.Status.UNREACHABLE
    assert "no heartbeat since" in a.status_reason
    free = {row["sku"]: row["total"] for row in selectors.availability()}
    assert free == {"rtx-5090": 1, "rtx-pro-6000": 1}
    assert launch(alice, fleet_template).host == b
    with pytest.raises(NoCapacity):
        launch(alice, fleet_template)
    # Beats again: back online and schedulable.
    Host.objects.filter(pk=a.pk).update(last_heartbeat_at=timezone.now())
    assert hosts_liveness().returned == [a.name]
    assert launch(alice, fleet_template).host == a


def test_a_drained_host_takes_nothing_and_its_instances_are_told(alice, two_hosts, fleet_template, olga):
    a, b = two_hosts
    on_a = [launch(alice, fleet_template, sku) for sku in ("rtx-5090", "rtx-pro-6000")]
    on_a = [i for i in on_a if i.host == a]
    told = host_drain(host=a, actor=olga)
    a.refresh_from_db()
    assert a.status == Host.Status.DRAINING
    assert "olga" in a.status_reason
    assert sorted(told) == sorted(i.public_id for i in on_a)
    for instance in on_a:
        instance.refresh_from_db()
        assert instance.status == Instance.Status.PENDING  # keeps going: a drain stops nothing
        assert instance.events.filter(kind=InstanceEvent.Kind.NOTE, message__contains="drained").exists()
    rest = [launch(alice, fleet_template, "rtx-5090")] if Gpu.objects.filter(host=b, gpu_type__sku="rtx-5090") else []
    assert all(i.host == b for i in rest)
    assert host_undrain(host=a)
    a.refresh_from_db()
    assert a.status == Host.Status.ONLINE


def test_a_cordoned_gpu_is_rented_to_nobody(alice, two_hosts, fleet_template):
    a, b = two_hosts
    gpus_cordon(gpus=Gpu.objects.filter(gpu_type__sku="rtx-5090", host=a), cordoned=True)
    assert launch(alice, fleet_template).host == b
    with pytest.raises(NoCapacity):
        launch(alice, fleet_template)
