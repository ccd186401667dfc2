"""Snapshots without containers: the local-directory store on a real loop-mounted
workspace (taken and restored in this process), checksums, tenancy, sizes, and billing
per GB-month through the ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus

import pytest

from billing import services as billing
from billing.models import LedgerEntry, UsageRecord
from instances.errors import SnapshotNeedsStop
from instances.host.objectstore import LocalStore
from instances.host.workspaces import workspace_ensure, workspace_open, workspace_release
from instances.models import Instance, InstanceEvent, Snapshot, SnapshotRestore
from instances.services.snapshot_transfer import restore_execute, snapshot_take
from instances.services.snapshots import snapshot_create, snapshot_delete, snapshot_restore
from tests.api.helpers import token_client
from tests.billing.helpers import Clock, event
from tests.factories import HostFactory, InstanceFactory

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = 86400
GIB = 2**30


def stopped_on(host, owner, *, storage_gb: int = 1) -> Instance:
    return InstanceFactory(owner=owner, host=host, status=Instance.Status.STOPPED, storage_gb=storage_gb)


@pytest.fixture
def quiet_host(db):
    """A host no worker consumes: the tasks the services send wait unread while this
    process does the worker's part itself (with its own store)."""
    return HostFactory()


def ready(owner, *, content_bytes: int = GIB, size_bytes: int = GIB // 2) -> Snapshot:
    instance = InstanceFactory(owner=owner, status=Instance.Status.STOPPED)
    return Snapshot.objects.create(
        owner=owner, instance=instance, status=Snapshot.Status.READY, store="local", object_key="snapshots/x",
        size_bytes=size_bytes, content_bytes=content_bytes, sha256="0" * 64,
    )  # fmt: skip


def write_files(instance: Instance, files: dict[str, bytes]) -> None:
    path = workspace_ensure(instance=instance)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    workspace_release(instance=instance)


def fill(handle) -> None:
    while True:
        handle.write(b"\xa5" * 2**24)
        handle.flush()


def listing(instance: Instance) -> dict[str, bytes]:
    with workspace_open(instance=instance) as files:
        return {
            str(p.relative_to(files)): p.read_bytes()
            for p in sorted(files.rglob("*"))
            if p.is_file() and "lost+found" not in p.parts
        }


@pytest.mark.django_db(transaction=True)
def test_the_local_store_keeps_a_snapshot_and_restores_it_only_when_its_checksum_matches(
    alice, quiet_host, tmp_path, settings
):
    settings.GPUCLOUD_STORAGE_GB_MIN = 1
    store = LocalStore(tmp_path / "store")
    instance = stopped_on(quiet_host, alice)
    write_files(instance, {"kept.txt": b"first\n", "deep/dir/data.bin": bytes(range(256)) * 4096})
    snapshot = snapshot_create(instance=instance, name="first")
    snapshot = snapshot_take(snapshot_id=snapshot.pk, store=store)

    assert snapshot.status == "ready", snapshot.last_error
    stored = tmp_path / "store" / snapshot.object_key
    assert stored.stat().st_size == snapshot.size_bytes
    assert snapshot.content_bytes > 1024 * 1024
    assert snapshot.done_bytes == snapshot.total_bytes
    assert not list(stored.parent.glob("*.partial"))
    assert InstanceEvent.objects.filter(instance=instance, kind="snapshot-ready").get().data == {
        "snapshot": snapshot.public_id,
        "size_bytes": snapshot.size_bytes,
    }

    # The workspace changes after the snapshot.
    write_files(instance, {"kept.txt": b"changed\n", "later.txt": b"later\n"})
    changed = listing(instance)

    # A corrupted object (another valid archive in its place): refused, nothing restored.
    other = stopped_on(quiet_host, alice)
    write_files(other, {"intruder.txt": b"not mine\n"})
    intruder = snapshot_take(snapshot_id=snapshot_create(instance=other).pk, store=store)
    good = stored.read_bytes()
    stored.write_bytes((tmp_path / "store" / intruder.object_key).read_bytes())
    restore = restore_execute(restore_id=snapshot_restore(snapshot=snapshot, instance=instance).pk, store=store)
    assert (restore.status, restore.last_error) == (
        "failed",
        "The snapshot's checksum does not match: it was not restored.",
    )
    assert listing(instance) == changed
    failed = InstanceEvent.objects.filter(instance=instance, kind="restore-failed").get()
    assert failed.data["code"] == "instances:snapshot-checksum-mismatch"

    # The real object again: the workspace is the snapshot's, the later file gone.
    stored.write_bytes(good)
    restore = restore_execute(restore_id=snapshot_restore(snapshot=snapshot, instance=instance).pk, store=store)
    assert restore.status == "done", restore.last_error
    assert restore.done_bytes == restore.total_bytes == snapshot.size_bytes
    assert listing(instance) == {"kept.txt": b"first\n", "deep/dir/data.bin": bytes(range(256)) * 4096}


@pytest.mark.django_db(transaction=True)
def test_a_snapshot_of_a_full_workspace_is_taken_and_a_running_one_is_refused(alice, quiet_host, tmp_path, settings):
    settings.GPUCLOUD_STORAGE_GB_MIN = 1
    instance = stopped_on(quiet_host, alice)
    path = workspace_ensure(instance=instance)
    with open(path / "fill", "wb") as handle, pytest.raises(OSError, match="No space left"):
        fill(handle)
    workspace_release(instance=instance)
    snapshot = snapshot_take(snapshot_id=snapshot_create(instance=instance).pk, store=LocalStore(tmp_path))
    assert snapshot.status == "ready", snapshot.last_error
    assert snapshot.content_bytes > 0.9 * GIB > 100 * snapshot.size_bytes  # zstd: one repeated byte

    running = InstanceFactory(owner=alice, host=quiet_host, status=Instance.Status.RUNNING)
    with pytest.raises(SnapshotNeedsStop):
        snapshot_create(instance=running)
    assert not Snapshot.objects.filter(instance=running).exists()


def test_another_tenants_snapshot_is_a_404_everywhere(alice, bob, quiet_host, sshd_template):
    snapshot = ready(alice)
    theirs = token_client(bob)
    bobs = stopped_on(quiet_host, bob)
    assert theirs.get(f"/api/gpu/snapshots/{snapshot.public_id}").status_code == HTTPStatus.NOT_FOUND
    assert theirs.delete(f"/api/gpu/snapshots/{snapshot.public_id}").status_code == HTTPStatus.NOT_FOUND
    restored = theirs.post(
        f"/api/gpu/instances/{bobs.public_id}/restore", {"snapshot": snapshot.public_id}, format="json"
    )
    assert restored.status_code == HTTPStatus.NOT_FOUND
    assert restored.json()["error"]["code"] == "instances:snapshot-not-found"
    launched = theirs.post(
        "/api/gpu/instances",
        {"template": sshd_template.slug, "gpu": "rtx-5090", "storage": 10, "snapshot": snapshot.public_id},
        format="json",
    )
    assert launched.status_code == HTTPStatus.NOT_FOUND, launched.content
    assert theirs.get("/api/gpu/snapshots").json()["results"] == []
    assert Snapshot.objects.get(pk=snapshot.pk).status == "ready"
    assert not Instance.objects.filter(owner=bob).exclude(pk=bobs.pk).exists()
    mine = token_client(alice).get("/api/gpu/snapshots").json()["results"]
    assert [(s["id"], s["status"], s["size_bytes"]) for s in mine] == [(snapshot.public_id, "ready", GIB // 2)]


def test_a_snapshot_larger_than_the_requested_storage_is_refused_before_anything_is_allocated(
    alice, this_host, quiet_host, sshd_template, settings
):
    settings.GPUCLOUD_STORAGE_GB_MIN = 1
    snapshot = ready(alice, content_bytes=3 * GIB)
    client = token_client(alice)
    body = {"template": sshd_template.slug, "gpu": "rtx-5090", "storage": 2, "snapshot": snapshot.public_id}
    refused = client.post("/api/gpu/instances", body, format="json")
    assert refused.status_code == HTTPStatus.BAD_REQUEST, refused.content
    assert refused.json()["error"]["code"] == "instances:snapshot-too-large"
    assert refused.json()["error"]["detail"]["content_bytes"] == 3 * GIB
    assert not Instance.objects.filter(owner=alice).exclude(pk=snapshot.instance_id).exists()
    assert not Instance.objects.filter(gpu__isnull=False).exists()
    small = stopped_on(quiet_host, alice, storage_gb=2)
    into = client.post(f"/api/gpu/instances/{small.public_id}/restore", {"snapshot": snapshot.public_id}, format="json")
    assert into.json()["error"]["code"] == "instances:snapshot-too-large"
    assert not SnapshotRestore.objects.exists()


def test_snapshots_are_billed_per_gb_month_to_the_cent_until_deleted(alice):
    clock = Clock(T0)
    instance = InstanceFactory(owner=alice, status=Instance.Status.STOPPED)
    three = ready(alice, size_bytes=3 * GIB)
    half = ready(alice, size_bytes=GIB // 2)
    event(instance, "snapshot-ready", clock.now, snapshot=three.public_id, size_bytes=3 * GIB)
    event(instance, "snapshot-ready", clock.now, snapshot=half.public_id, size_bytes=GIB // 2)
    billing.meter_run(now=clock.advance(DAY))
    event(instance, "snapshot-deleted", clock.advance(9 * DAY), snapshot=three.public_id)  # 10 days stored
    billing.meter_run(now=clock.advance(DAY))
    billing.meter_run(now=clock.advance(19 * DAY))  # 30 days for the other
    billing.meter_run(now=clock.now)  # a repeated run charges nothing more

    records = {r.start_event.data["snapshot"]: r for r in UsageRecord.objects.filter(kind="snapshot")}
    assert records[three.public_id].duration_seconds == 10 * DAY
    assert records[three.public_id].cost_usd == Decimal("0.05")  # 3 GiB * $0.05 * 10/30
    assert records[half.public_id].closed_at is None
    assert records[half.public_id].billed_usd == Decimal("0.025")  # 0.5 GiB * $0.05 * a month so far
    charged = LedgerEntry.objects.filter(user=alice, kind="snapshot")
    assert sum(e.amount_usd for e in charged) == Decimal("-0.075")
    assert len({e.idempotency_key for e in charged}) == charged.count()


def test_deleting_a_snapshot_stops_its_billing_at_the_deletion(alice):
    clock = Clock(datetime.now(tz=UTC))
    snapshot = ready(alice, size_bytes=GIB)
    event(snapshot.instance, "snapshot-ready", clock.advance(-DAY), snapshot=snapshot.public_id, size_bytes=GIB)
    billing.meter_run(now=clock.advance(DAY))
    deleted = snapshot_delete(snapshot=snapshot, actor=alice)
    billing.meter_run(now=clock.advance(10 * DAY))
    record = UsageRecord.objects.get(kind="snapshot")
    assert record.ended_at == deleted.deleted_at
    assert record.closed_at is not None


def test_the_instance_page_takes_lists_and_deletes_snapshots_and_destroys_keeping_one(client, alice, bob, quiet_host):
    instance = stopped_on(quiet_host, alice)
    client.force_login(alice)
    taken = client.post(f"/instances/{instance.public_id}/snapshot/", {"name": "before upgrade"})
    assert taken.status_code == HTTPStatus.FOUND
    snapshot = Snapshot.objects.get(instance=instance)
    assert (snapshot.name, snapshot.status, snapshot.store) == ("before upgrade", "pending", "local")
    part = client.get(f"/instances/{instance.public_id}/snapshots/").content.decode()
    assert "before upgrade" in part
    assert "every 2s" in part  # polled while it moves

    client.force_login(bob)
    assert client.get(f"/instances/{instance.public_id}/snapshots/").status_code == HTTPStatus.NOT_FOUND
    assert client.post(f"/snapshots/{snapshot.public_id}/delete/").status_code == HTTPStatus.NOT_FOUND
    client.force_login(alice)
    assert client.post(f"/snapshots/{snapshot.public_id}/delete/").status_code == HTTPStatus.FOUND
    assert Snapshot.objects.get(pk=snapshot.pk).status == "deleted"
    assert "before upgrade" not in client.get(f"/instances/{instance.public_id}/snapshots/").content.decode()

    kept = client.post(f"/instances/{instance.public_id}/destroy-keep/")
    assert kept.status_code == HTTPStatus.FOUND
    instance.refresh_from_db()
    assert instance.status == "terminating"
    assert Snapshot.objects.filter(instance=instance, status="pending").count() == 1
