"""Snapshots in a real S3 server (SeaweedFS), taken and restored by a real worker from
workspaces written inside real containers; the store killed in the middle of an upload."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from instances.host.workspaces import instance_dir, workspace_open
from instances.models import Instance, InstanceEvent, Snapshot, SnapshotRestore
from instances.services import instance_launch, instance_start, instance_stop
from instances.services.snapshots import snapshot_create, snapshot_delete, snapshot_restore
from instances.services.upkeep import workspace_cleanup
from tests.api.helpers import token_client
from tests.containers import inside, wait_for_status
from tests.factories import TemplateFactory
from tests.objectstore import bucket_name, s3_client
from tests.processes import wait_until

GIB = 2**30


def launch(user, template, *, storage_gb: int = 1, snapshot: str = "", gpu_type: str = "rtx-5090") -> Instance:
    instance = instance_launch(
        user=user, template=template, gpu_type=gpu_type, storage_gb=storage_gb, access=["ssh"], snapshot=snapshot
    )
    return wait_for_status(instance, "running", "failed")


def settled(snapshot: Snapshot, *statuses: str, timeout: float = 300) -> Snapshot:
    return wait_until(
        lambda: (s := Snapshot.objects.get(pk=snapshot.pk)).status in statuses and s,
        timeout=timeout,
        what=f"snapshot {snapshot.public_id} to be {'/'.join(statuses)}",
    )


def stored_size(key: str) -> int | None:
    try:
        return int(s3_client().head_object(Bucket=bucket_name(), Key=key)["ContentLength"])
    except Exception:
        return None


@pytest.mark.docker
@pytest.mark.celery
def test_a_snapshot_in_s3_restores_the_files_it_holds_and_not_later_ones(
    celery_worker, s3_snapshots, alice, this_host, settings
):
    settings.GPUCLOUD_STORAGE_GB_MIN = 1
    template = TemplateFactory()
    instance = launch(alice, template)
    assert instance.status == "running", instance.last_error
    assert inside(instance, "mkdir -p /workspace/d && echo first > /workspace/d/kept").returncode == 0
    instance_stop(instance=instance)
    instance = wait_for_status(instance, "stopped")

    snapshot = settled(snapshot_create(instance=instance, name="first"), "ready", "failed")
    assert snapshot.status == "ready", snapshot.last_error
    assert stored_size(snapshot.object_key) == snapshot.size_bytes > 0
    listed = token_client(alice).get("/api/gpu/snapshots").json()["results"]
    assert [(s["id"], s["name"], s["status"], s["size_bytes"]) for s in listed] == [
        (snapshot.public_id, "first", "ready", snapshot.size_bytes)
    ]

    # More is written after the snapshot.
    instance_start(instance=instance)
    instance = wait_for_status(instance, "running")
    assert inside(instance, "echo later > /workspace/later && echo changed > /workspace/d/kept").returncode == 0

    # A new instance (of another GPU type) from the snapshot has its files, not the later ones.
    restored = launch(alice, template, snapshot=snapshot.public_id, gpu_type="rtx-pro-6000")
    assert restored.status == "running", restored.last_error
    assert inside(restored, "cat /workspace/d/kept").stdout == "first\n"
    assert inside(restored, "test -e /workspace/later").returncode == 1
    assert SnapshotRestore.objects.get(instance=restored).status == "done"

    # Into the stopped instance: its workspace becomes the snapshot's.
    instance_stop(instance=instance)
    instance = wait_for_status(instance, "stopped")
    restore = snapshot_restore(snapshot=snapshot, instance=instance)
    restore = wait_until(
        lambda: (r := SnapshotRestore.objects.get(pk=restore.pk)).status in ("done", "failed") and r,
        timeout=120,
        what="the restore",
    )
    assert restore.status == "done", restore.last_error
    shown = token_client(alice).get(f"/api/gpu/instances/{instance.public_id}/restore").json()
    assert (shown["status"], shown["done_bytes"]) == ("done", snapshot.size_bytes)
    with workspace_open(instance=instance) as files:
        assert (files / "d" / "kept").read_text() == "first\n"
        assert not (files / "later").exists()

    # Deleted: gone from the list and, once the purge task ran, from the store.
    snapshot_delete(snapshot=snapshot, actor=alice)
    assert token_client(alice).get("/api/gpu/snapshots").json()["results"] == []
    wait_until(lambda: stored_size(snapshot.object_key) is None, timeout=60, what="the object to be removed")


@pytest.mark.docker
@pytest.mark.celery
def test_destroy_keeping_a_snapshot_snapshots_first_and_the_workspace_goes_after_the_grace(
    celery_worker, s3_snapshots, alice, this_host, settings
):
    settings.GPUCLOUD_STORAGE_GB_MIN = 1
    instance = launch(alice, TemplateFactory())
    assert inside(instance, "echo precious > /workspace/precious").returncode == 0

    destroyed = token_client(alice).delete(f"/api/gpu/instances/{instance.public_id}?snapshot=1")
    assert destroyed.status_code == HTTPStatus.ACCEPTED, destroyed.content
    wait_for_status(instance, "terminated")
    snapshot = settled(Snapshot.objects.get(instance=instance), "ready", "failed")
    assert snapshot.status == "ready", snapshot.last_error
    assert stored_size(snapshot.object_key) == snapshot.size_bytes

    assert instance.public_id in workspace_cleanup(host=this_host, grace_seconds=0)
    assert not instance_dir(instance=instance).exists()
    kinds = list(InstanceEvent.objects.filter(instance=instance).values_list("kind", flat=True))
    assert kinds.index("snapshot-ready") < kinds.index("workspace-removed")

    again = launch(alice, TemplateFactory(), snapshot=snapshot.public_id)
    assert inside(again, "cat /workspace/precious").stdout == "precious\n"


@pytest.mark.docker
@pytest.mark.celery
def test_a_store_killed_mid_upload_lists_no_snapshot_and_the_retry_succeeds_once_it_is_back(
    celery_worker, s3_snapshots, alice, this_host, settings
):
    settings.GPUCLOUD_STORAGE_GB_MIN = 1
    instance = launch(alice, TemplateFactory(), storage_gb=2)
    # Incompressible, and large enough that the upload (5 MB parts, one at a time) lasts.
    filled = inside(instance, "head -c 900M /dev/urandom > /workspace/noise && echo ok")
    assert filled.stdout == "ok\n", filled.stderr
    instance_stop(instance=instance)
    instance = wait_for_status(instance, "stopped")

    snapshot = snapshot_create(instance=instance)
    settled(snapshot, "uploading", "ready", "failed", timeout=60)
    s3_snapshots.kill()
    try:
        failed_once = wait_until(
            lambda: (s := Snapshot.objects.get(pk=snapshot.pk)).last_error and s, timeout=120, what="the upload to fail"
        )
        assert failed_once.status in ("pending", "uploading")
        assert "store" in failed_once.last_error
        listed = token_client(alice).get("/api/gpu/snapshots").json()["results"]
        assert [(s["status"], s["size_bytes"], s["sha256"]) for s in listed] == [(failed_once.status, None, "")]
        with pytest.raises(Exception, match="ready"):
            launch(alice, TemplateFactory(), storage_gb=2, snapshot=snapshot.public_id)
        # The instance cannot start under a snapshot that is still being taken.
        assert token_client(alice).post(f"/api/gpu/instances/{instance.public_id}/start").status_code == 409
    finally:
        s3_snapshots.start()

    snapshot = settled(snapshot, "ready", "failed", timeout=400)
    assert snapshot.status == "ready", snapshot.last_error
    assert snapshot.attempts >= 2
    assert stored_size(snapshot.object_key) == snapshot.size_bytes
    assert snapshot.content_bytes > 900 * 2**20
    uploads = s3_client().list_multipart_uploads(Bucket=bucket_name(), Prefix=snapshot.object_key)
    assert not uploads.get("Uploads")
