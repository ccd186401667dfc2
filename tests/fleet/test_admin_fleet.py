"""The fleet in the admin: each host's last beat and why it is not online, what runs
where, drain and return to service, cordon and uncordon."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.admin import helpers
from django.urls import reverse
from django.utils import timezone

from instances.models import Gpu, Host, InstanceEvent
from instances.services import instance_launch
from instances.services.liveness import hosts_liveness

pytestmark = pytest.mark.django_db


def act(client, changelist: str, action: str, pks: list[int]):
    return client.post(
        reverse(changelist), {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(pk) for pk in pks]}, follow=True
    )


def test_operators_drain_a_host_cordon_a_gpu_and_see_what_runs_where(client, olga, alice, two_hosts, fleet_template):
    a, b = two_hosts
    instance = instance_launch(user=alice, template=fleet_template.slug, gpu_type="rtx-5090", storage_gb=20, access=[])
    assert instance.host == a  # equally loaded hosts: by name
    client.force_login(olga)
    page = client.get(reverse("admin:instances_host_change", args=[a.pk])).content.decode()
    assert instance.public_id in page  # runs here
    assert "Last beat" in page

    assert act(client, "admin:instances_host_changelist", "drain_hosts", [a.pk]).status_code == HTTPStatus.OK
    a.refresh_from_db()
    assert a.status == Host.Status.DRAINING
    assert "olga" in a.status_reason
    assert instance.events.filter(kind=InstanceEvent.Kind.NOTE, message__contains="drained").exists()
    act(client, "admin:instances_host_changelist", "undrain_hosts", [a.pk])
    a.refresh_from_db()
    assert a.status == Host.Status.ONLINE

    gpu = Gpu.objects.get(host=b, index=1)
    act(client, "admin:instances_gpu_changelist", "cordon_gpus", [gpu.pk])
    gpu.refresh_from_db()
    assert not gpu.enabled
    act(client, "admin:instances_gpu_changelist", "uncordon_gpus", [gpu.pk])
    gpu.refresh_from_db()
    assert gpu.enabled

    # Why a host is not online, in the list.
    Host.objects.filter(pk=b.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    hosts_liveness()
    listing = client.get(reverse("admin:instances_host_changelist")).content.decode()
    assert "no heartbeat since" in listing
