"""The waitlist: a launch into a full GPU type waits in line with `?queue=1`, is granted in
order as GPUs free up (admission checked again then), can be cancelled, is never billed
before it starts, and the started instance's timeline says so."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

import pytest

from billing.models import LedgerEntry, UsageRecord
from instances.models import Instance, InstanceEvent, WaitlistEntry
from instances.services.locks import lock_acquire, lock_release
from instances.services.settle import instance_settle
from instances.services.waitlist import waitlist_grant
from tests.api.helpers import launch, token_client
from tests.billing.helpers import credit
from tests.factories import TemplateFactory, UserFactory

LAUNCH = {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]}


@pytest.fixture
def full(alice, this_host):
    """The one RTX 5090 of this host, held by alice."""
    TemplateFactory()
    return launch(alice)


def _free(instance: Instance) -> None:
    instance_settle(instance_id=instance.pk, expected=Instance.GPU_HOLDING, status=Instance.Status.TERMINATED)


def _queue(client, **headers):
    return client.post("/api/gpu/instances?queue=1", LAUNCH, format="json", **headers)


def test_a_full_type_queues_in_order_and_grants_as_gpus_free_up(full, bob):
    carol = UserFactory(username="carol")
    bob_api, carol_api = token_client(bob), token_client(carol)
    assert bob_api.post("/api/gpu/instances", LAUNCH, format="json").status_code == HTTPStatus.CONFLICT

    first = _queue(bob_api)
    assert first.status_code == HTTPStatus.ACCEPTED, first.content
    entry = first.json()["queued"]
    assert (entry["status"], entry["position"], entry["gpu_type"], entry["instance"]) == (
        "waiting",
        1,
        "rtx-5090",
        None,
    )
    assert first["Location"] == f"/api/gpu/waitlist/{entry['id']}"
    second = _queue(carol_api).json()["queued"]
    assert second["position"] == 2
    # Another customer's entry is not there for them; waiting holds and bills nothing.
    assert bob_api.get(f"/api/gpu/waitlist/{second['id']}").status_code == HTTPStatus.NOT_FOUND
    assert not Instance.objects.filter(owner__in=[bob, carol]).exists()
    assert not LedgerEntry.objects.filter(user__in=[bob, carol]).exists()
    assert not UsageRecord.objects.filter(instance__owner__in=[bob, carol]).exists()

    assert waitlist_grant() == 0  # still full: nobody moves
    _free(full)
    assert waitlist_grant() == 1
    granted = bob_api.get(f"/api/gpu/waitlist/{entry['id']}").json()
    assert granted["status"] == "granted"
    assert granted["position"] is None
    instance = Instance.objects.get(public_id=granted["instance"], owner=bob)
    assert instance.status == Instance.Status.PENDING
    assert instance.gpu is not None
    note = instance.events.get(kind=InstanceEvent.Kind.NOTE)
    assert "started from the waitlist" in note.message
    timeline = bob_api.get(f"/api/gpu/instances/{instance.public_id}/events").json()["results"]
    assert any("waitlist" in e["message"] for e in timeline)  # the customer sees it
    # carol moves up; a repeated grant run changes nothing.
    assert carol_api.get(f"/api/gpu/waitlist/{second['id']}").json()["position"] == 1
    assert waitlist_grant() == 0
    assert Instance.objects.filter(owner=bob).count() == 1


def test_cancel_only_while_waiting_and_a_retry_with_its_key_is_the_same_entry(full, bob):
    bob_api = token_client(bob)
    queued = _queue(bob_api, HTTP_IDEMPOTENCY_KEY="k-1").json()["queued"]
    assert _queue(bob_api, HTTP_IDEMPOTENCY_KEY="k-1").json()["queued"]["id"] == queued["id"]
    assert WaitlistEntry.objects.filter(owner=bob).count() == 1
    listed = bob_api.get("/api/gpu/waitlist").json()["results"]
    assert [e["id"] for e in listed] == [queued["id"]]

    cancelled = bob_api.delete(f"/api/gpu/waitlist/{queued['id']}")
    assert cancelled.status_code == HTTPStatus.OK
    assert cancelled.json()["status"] == "cancelled"
    again = bob_api.delete(f"/api/gpu/waitlist/{queued['id']}")
    assert again.status_code == HTTPStatus.CONFLICT
    assert again.json()["error"]["code"] == "instances:waitlist-not-waiting"
    _free(full)
    assert waitlist_grant() == 0
    assert not Instance.objects.filter(owner=bob).exists()


def test_admission_is_checked_again_at_its_turn(full, bob, settings):
    settings.GPUCLOUD_ADMISSION_CHECKS = ["billing.checks.balance_covers_launch"]
    carol = UserFactory(username="carol")
    credit(bob, "5.00")
    credit(carol, "5.00")
    bob_entry = _queue(token_client(bob)).json()["queued"]
    carol_entry = _queue(token_client(carol)).json()["queued"]
    # bob's balance is gone by his turn: he is refused, and carol (next in line) starts.
    credit(bob, "-5.00")
    _free(full)
    assert waitlist_grant() == 2
    refused = WaitlistEntry.objects.get(public_id=bob_entry["id"])
    assert refused.status == WaitlistEntry.Status.REFUSED
    assert refused.reason.startswith("billing:insufficient-balance")
    assert not Instance.objects.filter(owner=bob).exists()
    assert WaitlistEntry.objects.get(public_id=carol_entry["id"]).instance.owner == carol
    assert Decimal(token_client(bob).get("/api/billing/balance").json()["balance_usd"]) == 0


def test_the_launch_page_queues_with_its_checkbox_and_the_dashboard_cancels(full, bob, client):
    client.force_login(bob)
    form = {"template": "test-sshd", "gpu": "rtx-5090", "storage": "20", "access": ["ssh"]}
    refused = client.post("/launch/", form)
    assert refused.status_code == HTTPStatus.CONFLICT  # no box ticked: the pool is full
    assert 'name="queue"' in refused.content.decode()

    queued = client.post("/launch/", form | {"queue": "on"}, follow=True)
    assert queued.status_code == HTTPStatus.OK
    page = queued.content.decode()
    entry = WaitlistEntry.objects.get(owner=bob)
    assert f"you are number 1 in line ({entry.public_id})" in page
    assert "Waiting for a GPU" in page
    assert not Instance.objects.filter(owner=bob).exists()

    left = client.post(f"/waitlist/{entry.public_id}/cancel/", follow=True)
    assert f"{entry.public_id} left the waitlist." in left.content.decode()
    entry.refresh_from_db()
    assert entry.status == WaitlistEntry.Status.CANCELLED
    other = UserFactory(username="carol")
    client.force_login(other)
    assert client.post(f"/waitlist/{entry.public_id}/cancel/").status_code == HTTPStatus.NOT_FOUND


def test_operators_see_the_queue_per_gpu_type_in_the_admin(full, bob, olga, client):
    _queue(token_client(bob))
    client.force_login(olga)
    page = client.get(f"/admin/instances/waitlistentry/?status__exact=waiting&gpu_type__id__exact={full.gpu_type_id}")
    assert page.status_code == HTTPStatus.OK
    body = page.content.decode()
    assert WaitlistEntry.objects.get(owner=bob).public_id in body
    assert "Position" in body


def test_an_entry_whose_launch_is_busy_keeps_its_place(full, bob):
    """bob's own launch holds his admission lock (a real lock, held here): the grant cannot
    admit him now, so the entry waits on instead of being refused."""
    queued = _queue(token_client(bob)).json()["queued"]
    _free(full)
    held = lock_acquire(name=f"admission:user:{bob.pk}", ttl_seconds=60)
    assert held is not None
    try:
        assert waitlist_grant() == 0
    finally:
        lock_release(held=held)
    entry = WaitlistEntry.objects.get(public_id=queued["id"])
    assert entry.status == WaitlistEntry.Status.WAITING
    assert waitlist_grant() == 1
    entry.refresh_from_db()
    assert entry.status == WaitlistEntry.Status.GRANTED
