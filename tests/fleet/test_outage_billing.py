"""What an outage does to billing, rows only (the meter on PostgreSQL, no worker): a
stopped instance's workspace is not billed while its host is unreachable, and is again
from the moment the host is back; a launch pending there is failed and holds nothing."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import UsageRecord
from billing.services import meter_run
from instances.models import Host, Instance, InstanceEvent
from instances.services import instance_launch
from instances.services.events import Source, segment_close, segment_open
from instances.services.liveness import hosts_liveness
from instances.services.outage import outage_leftovers_resume
from instances.services.settle import instance_settle

pytestmark = pytest.mark.django_db
Kind = InstanceEvent.Kind


def stopped_instance(user, template, *, ran_from, ran_until) -> Instance:
    """An instance that ran on a host and was stopped: its workspace is billed from then."""
    instance = instance_launch(user=user, template=template.slug, gpu_type="rtx-5090", storage_gb=20, access=[])
    with transaction.atomic():
        segment_open(instance=instance, at=ran_from, source=Source.WORKER)
        segment_close(instance=instance, at=ran_until, source=Source.WORKER)
        instance.status, instance.gpu = Instance.Status.STOPPED, None
        instance.save()
    return instance


def running_on_a_host_that_dies(user, template, two_hosts, *, now) -> Instance:
    """An instance running on host a since 3 minutes before `now`; a's last beat 2
    minutes before `now`, judged by the liveness job (b is offline)."""
    a, b = two_hosts
    Host.objects.filter(pk=b.pk).update(status=Host.Status.OFFLINE)
    instance = instance_launch(user=user, template=template.slug, gpu_type="rtx-5090", storage_gb=20, access=[])
    with transaction.atomic():
        segment_open(instance=instance, at=now - timedelta(minutes=3), source=Source.WORKER)
        instance.status = Instance.Status.RUNNING
        instance.save()
    Host.objects.filter(pk=a.pk).update(last_heartbeat_at=now - timedelta(minutes=2))
    assert hosts_liveness().unreachable == [a.name]
    return instance


def test_a_stored_workspace_is_not_billed_while_its_host_is_unreachable(alice, two_hosts, fleet_template):
    a, _ = two_hosts
    Host.objects.exclude(pk=a.pk).update(status=Host.Status.OFFLINE)  # everything lands on a
    now = timezone.now()
    instance = stopped_instance(
        alice, fleet_template, ran_from=now - timedelta(minutes=10), ran_until=now - timedelta(minutes=6)
    )
    pending = instance_launch(
        user=alice, template=fleet_template.slug, gpu_type="rtx-pro-6000", storage_gb=20, access=[]
    )
    last_beat = now - timedelta(minutes=4)
    Host.objects.filter(pk=a.pk).update(last_heartbeat_at=last_beat)
    meter_run()

    assert hosts_liveness().unreachable == [a.name]
    assert instance.events.filter(kind=Kind.HOST_UNREACHABLE, at=last_beat, data__storage_paused=True).exists()
    pending.refresh_from_db()
    assert pending.status == Instance.Status.FAILED
    assert pending.gpu is None
    assert not pending.ports.exists()
    meter_run()
    paused = UsageRecord.objects.get(instance=instance, kind=UsageRecord.Kind.STORAGE)
    assert paused.started_at == now - timedelta(minutes=6)
    assert paused.ended_at == last_beat  # not a second of the outage
    assert paused.closed_at is not None
    assert not UsageRecord.objects.filter(instance=pending).exists()

    Host.objects.filter(pk=a.pk).update(last_heartbeat_at=timezone.now())
    assert hosts_liveness().returned == [a.name]
    back = instance.events.get(kind=Kind.HOST_RETURNED)
    meter_run()
    resumed = UsageRecord.objects.filter(instance=instance, kind=UsageRecord.Kind.STORAGE).order_by("started_at")
    assert [(r.started_at, r.ended_at) for r in resumed] == [(paused.started_at, last_beat), (back.at, None)]
    assert resumed[1].storage_gb == 20
    # A second liveness run changes nothing.
    assert hosts_liveness().returned == []
    assert instance.events.filter(kind__in=(Kind.HOST_UNREACHABLE, Kind.HOST_RETURNED)).count() == 2


def test_the_owner_sees_unreachable_with_why_in_the_list_the_detail_and_the_page(
    client, alice, bob, two_hosts, fleet_template
):
    now = timezone.now()
    instance = running_on_a_host_that_dies(alice, fleet_template, two_hosts, now=now)

    api = APIClient()
    api.force_authenticate(alice)
    listed = api.get("/api/gpu/instances").json()["results"]
    assert [(i["id"], i["status"]) for i in listed] == [(instance.public_id, "unreachable")]
    assert "no heartbeat since" in listed[0]["error"]
    client.force_login(alice)
    page = client.get(reverse("web:instance", args=[instance.public_id]))
    assert b"data-unreachable" in page.content
    assert b"no heartbeat since" in page.content
    # Someone else's: still a 404.
    api.force_authenticate(bob)
    assert api.get(f"/api/gpu/instances/{instance.public_id}").status_code == HTTPStatus.NOT_FOUND
    # The row keeps its own status; the segment ended at the last beat.
    instance.refresh_from_db()
    assert instance.status == Instance.Status.RUNNING
    assert instance.stopped_at == now - timedelta(minutes=2)


def test_a_workspace_stopped_after_the_outage_before_the_reconciler_saw_it_is_billed_again(
    alice, two_hosts, fleet_template
):
    a, _ = two_hosts
    now = timezone.now()
    instance = running_on_a_host_that_dies(alice, fleet_template, two_hosts, now=now)
    Host.objects.filter(pk=a.pk).update(last_heartbeat_at=timezone.now())
    assert hosts_liveness().returned == [a.name]
    assert not instance.events.filter(kind=Kind.HOST_RETURNED).exists()  # running: the reconciler's
    # Stopped by its worker before the reconciler ran (its segment was closed already).
    instance_settle(instance_id=instance.pk, expected=(Instance.Status.RUNNING,), status=Instance.Status.STOPPED)
    a.refresh_from_db()
    assert outage_leftovers_resume(host=a, at=timezone.now()) == [instance.public_id]
    assert outage_leftovers_resume(host=a, at=timezone.now()) == []  # once
    meter_run()
    storage = UsageRecord.objects.filter(instance=instance, kind=UsageRecord.Kind.STORAGE).order_by("started_at")
    assert [r.ended_at for r in storage] == [now - timedelta(minutes=2), None]
