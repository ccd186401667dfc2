"""Growing a stopped instance's storage: the rules, the API, and billing from the moment it changes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus

import pytest

from billing import services as billing
from billing.models import LedgerEntry, UsageRecord
from instances.errors import InvalidStorage, InvalidTransition, StorageShrink
from instances.models import Instance, InstanceEvent, WorkspaceUsage
from instances.services import instance_resize
from tests.api.helpers import token_client
from tests.billing.helpers import Clock, event
from tests.factories import InstanceFactory

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = 86400


def stopped(user, *, storage_gb: int = 10) -> Instance:
    return InstanceFactory(owner=user, status=Instance.Status.STOPPED, storage_gb=storage_gb)


def test_billing_follows_the_new_size_from_the_moment_it_changes(alice):
    clock = Clock(T0)
    instance = stopped(alice, storage_gb=10)
    event(instance, "started", clock.now)
    event(instance, "ended", clock.advance(600), storage_gb=10)
    billing.meter_run(now=clock.advance(DAY))
    instance_resize(instance=instance, storage_gb=20, now=clock.advance(9 * DAY))  # 10 days after the stop
    billing.meter_run(now=clock.advance(DAY))
    event(instance, "started", clock.advance(14 * DAY))  # 15 days at 20 GB
    billing.meter_run(now=clock.advance(1))
    billing.meter_run(now=clock.advance(60))  # a repeated run charges nothing more

    before, after = UsageRecord.objects.filter(kind="storage").order_by("started_at")
    assert (before.storage_gb, before.duration_seconds) == (10, 10 * DAY)
    assert (after.storage_gb, after.duration_seconds) == (20, 15 * DAY)
    assert before.cost_usd == Decimal("0.17")  # 10 GB * $0.05 * 10/30 = 0.1666…
    assert after.cost_usd == Decimal("0.50")  # 20 GB * $0.05 * 15/30
    charged = LedgerEntry.objects.filter(user=alice, kind="storage")
    assert sum(e.amount_usd for e in charged) == Decimal("-0.67")
    assert len({e.idempotency_key for e in charged}) == charged.count()
    resized = InstanceEvent.objects.get(instance=instance, kind=InstanceEvent.Kind.RESIZED)
    assert resized.data == {"storage_gb": 20, "previous_gb": 10}


def test_a_resize_is_refused_unless_it_grows_a_stopped_instance(alice, settings):
    instance = stopped(alice, storage_gb=20)
    WorkspaceUsage.objects.create(instance=instance, used_bytes=5 * 2**30, size_bytes=20 * 2**30, measured_at=T0)
    with pytest.raises(StorageShrink) as shrink:
        instance_resize(instance=instance, storage_gb=10)
    assert shrink.value.detail == {"storage": 20, "used_bytes": 5 * 2**30}
    with pytest.raises(InvalidStorage):
        instance_resize(instance=instance, storage_gb=settings.GPUCLOUD_STORAGE_GB_MAX + 1)
    assert instance_resize(instance=instance, storage_gb=20).storage_gb == 20  # the same size: nothing
    running = InstanceFactory(owner=alice, status=Instance.Status.RUNNING, storage_gb=20)
    with pytest.raises(InvalidTransition):
        instance_resize(instance=running, storage_gb=30)
    instance.refresh_from_db()
    running.refresh_from_db()
    assert (instance.storage_gb, running.storage_gb) == (20, 20)
    assert not InstanceEvent.objects.filter(kind=InstanceEvent.Kind.RESIZED).exists()


def test_the_api_grows_my_stopped_instance_and_hides_anyone_elses(alice, bob):
    mine, theirs = stopped(alice), stopped(bob)
    client = token_client(alice)
    url = f"/api/gpu/instances/{mine.public_id}/resize"

    grown = client.post(url, {"storage": 30}, format="json")
    assert grown.status_code == HTTPStatus.OK, grown.content
    assert grown.json() == {"id": mine.public_id, "status": "stopped", "storage": 30}
    shown = client.get(f"/api/gpu/instances/{mine.public_id}").json()
    assert (shown["storage"], shown["workspace"]) == (30, None)

    shrink = client.post(url, {"storage": 20}, format="json")
    assert shrink.status_code == HTTPStatus.BAD_REQUEST
    assert shrink.json()["error"]["code"] == "instances:storage-shrink"
    other = client.post(f"/api/gpu/instances/{theirs.public_id}/resize", {"storage": 40}, format="json")
    assert other.status_code == HTTPStatus.NOT_FOUND
    theirs.refresh_from_db()
    assert theirs.storage_gb == 10

    WorkspaceUsage.objects.create(instance=mine, used_bytes=2**30, size_bytes=30 * 2**30, measured_at=T0)
    listed = client.get("/api/gpu/instances").json()
    row = next(r for r in listed["results"] if r["id"] == mine.public_id) if "results" in listed else listed[0]
    assert row["workspace"]["used_bytes"] == 2**30
    assert row["workspace"]["size_bytes"] == 30 * 2**30
    assert row["workspace"]["percent"] == pytest.approx(3.3)


def test_the_instance_page_shows_usage_and_grows_a_stopped_instance(client, alice, bob):
    instance = stopped(alice, storage_gb=10)
    WorkspaceUsage.objects.create(instance=instance, used_bytes=95 * 2**27, size_bytes=10 * 2**30, measured_at=T0)
    client.force_login(alice)
    page = client.get(f"/instances/{instance.public_id}/").content.decode()
    assert "used of 10.0" in page
    assert "almost full" in page  # 95 * 128 MiB of 10 GiB

    done = client.post(f"/instances/{instance.public_id}/resize/", {"storage": "25"}, follow=True)
    assert "now has 25 GB" in done.content.decode()
    refused = client.post(f"/instances/{instance.public_id}/resize/", {"storage": "12"}, follow=True)
    assert "can only be grown" in refused.content.decode()
    instance.refresh_from_db()
    assert instance.storage_gb == 25

    client.force_login(bob)
    assert (
        client.post(f"/instances/{instance.public_id}/resize/", {"storage": "50"}).status_code == HTTPStatus.NOT_FOUND
    )
    instance.refresh_from_db()
    assert instance.storage_gb == 25
