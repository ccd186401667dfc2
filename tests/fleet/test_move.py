"""Resume anywhere: a stopped instance whose host cannot take it starts on the other host,
its workspace moved through the (local, shared) snapshot store by the two real workers.

Host a is drained (or its GPU cordoned): a start answers 409 `instances:move-required`
with the workspace's size; `?move=1` moves it: it runs on b with the file written on a,
a's copy is removed, and billing has no overlap (no GPU segment while it moved, its
storage on one host, the move's snapshot never billed). A move whose restore fails (the
stored object corrupted before b restores it) leaves it stopped on a, with its files.
From an unreachable a it moves from the customer's snapshot taken since the stop, and
a's copy is removed when a returns.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from billing.models import UsageRecord
from billing.services import meter_run
from instances.models import Gpu, Instance, InstanceEvent, InstanceMove, Snapshot
from instances.services import instance_launch, instance_start, instance_stop
from instances.services.fleet import gpus_cordon, host_drain
from instances.services.liveness import liveness_bound
from instances.services.snapshots import snapshot_create
from tests.containers import inside, wait_for_status
from tests.fleet.conftest import ENGINE_B, HOST_A, HOST_B, SNAPSHOTS
from tests.fleet.test_host_death import marked
from tests.processes import wait_until

pytestmark = [pytest.mark.docker]

Kind = InstanceEvent.Kind
CONTENT = "written on a"


def workspace_dir(host_name: str, instance: Instance) -> Path:
    """The instance's directory under host `host_name`'s worker's data root."""
    root = Path(settings.GPUCLOUD_DATA_ROOT) / "fleet" / host_name
    return root / "users" / str(instance.owner_id) / instance.public_id


def inside_b(instance: Instance, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "-H", ENGINE_B.url, "exec", instance.container_name, "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def stopped_on_a_with_a_file(user, template, a) -> Instance:
    instance = instance_launch(user=user, template=template.slug, gpu_type="rtx-5090", storage_gb=10, access=["ssh"])
    assert instance.host == a
    wait_for_status(instance, "running")
    assert inside(instance, f"echo '{CONTENT}' > /workspace/kept").returncode == 0
    instance_stop(instance=instance)
    return wait_for_status(instance, "stopped")


def overlapping(records: list[UsageRecord]) -> list[tuple[UsageRecord, UsageRecord]]:
    ordered = sorted(records, key=lambda r: r.started_at)
    return [(x, y) for x, y in itertools.pairwise(ordered) if x.ended_at is None or x.ended_at > y.started_at]


def test_a_drained_hosts_stopped_instance_moves_to_the_other_host_with_its_files(
    settings, alice, two_hosts, fleet, fleet_template
):
    settings.GPUCLOUD_PLACEMENT_POLICY = "pack"
    a, b = two_hosts
    fleet(HOST_A)
    fleet(HOST_B)
    instance = stopped_on_a_with_a_file(alice, fleet_template, a)
    host_drain(host=a)

    api = APIClient()
    api.force_authenticate(alice)
    path = f"/api/gpu/instances/{instance.public_id}/start"
    asked = api.post(path)
    assert asked.status_code == 409, asked.content
    error = asked.json()["error"]
    assert error["code"] == "instances:move-required"
    assert error["detail"]["reason"] == "draining"
    usage = getattr(Instance.objects.get(pk=instance.pk), "workspace_usage", None)
    assert error["detail"]["size_bytes"] == (usage.used_bytes if usage else 0)
    instance.refresh_from_db()
    assert (instance.status, instance.host) == ("stopped", a)  # nothing changed
    assert not InstanceMove.objects.filter(instance=instance).exists()

    moving = api.post(f"{path}?move=1")
    assert moving.status_code == 202, moving.content
    assert moving.json()["status"] == "stopped"
    assert api.post(path).json()["error"]["code"] in ("instances:move-impossible", "instances:snapshot-busy")

    instance = wait_for_status(instance, "running", "failed", timeout=300)
    assert instance.status == "running", instance.last_error
    assert instance.host == b
    assert inside_b(instance, "cat /workspace/kept").stdout == f"{CONTENT}\n"
    move = InstanceMove.objects.get(instance=instance)
    assert move.status == "done"
    wait_until(lambda: not workspace_dir(HOST_A, instance).exists(), timeout=60, what="a's copy removed")
    assert workspace_dir(HOST_B, instance).exists()
    kinds = list(instance.events.order_by("id").values_list("kind", flat=True))
    at = kinds.index(Kind.MOVE_REQUESTED)
    progress = [k for k in kinds[at:] if k in (Kind.SNAPSHOT_READY, Kind.RESTORED, Kind.MOVED, Kind.STARTED)]
    assert progress == [Kind.SNAPSHOT_READY, Kind.RESTORED, Kind.MOVED, Kind.STARTED]
    assert Snapshot.objects.get(pk=move.snapshot_id).status == "deleted"

    # Billing: no GPU segment while it moved, one storage segment at a time, the move's
    # snapshot not billed.
    meter_run()
    records = list(UsageRecord.objects.filter(instance=instance))
    gpu = [r for r in records if r.kind == UsageRecord.Kind.GPU]
    storage = [r for r in records if r.kind == UsageRecord.Kind.STORAGE]
    assert not [r for r in records if r.kind == UsageRecord.Kind.SNAPSHOT]
    assert len(gpu) == 2
    assert not overlapping(gpu)
    assert not overlapping(storage)
    requested = instance.events.get(kind=Kind.MOVE_REQUESTED).at
    moved = instance.events.get(kind=Kind.MOVED).at
    assert not [r for r in gpu if r.started_at <= moved and (r.ended_at is None or r.ended_at > requested)]


def test_a_move_whose_restore_fails_leaves_it_stopped_on_its_host_with_its_files(
    settings, alice, two_hosts, fleet, fleet_template
):
    a, _ = two_hosts
    fleet(HOST_A)  # b's worker starts only once the stored object is corrupted
    instance = stopped_on_a_with_a_file(alice, fleet_template, a)
    gpus_cordon(gpus=Gpu.objects.filter(host=a, gpu_type__sku="rtx-5090"), cordoned=True)

    with pytest.raises(Exception, match="moves its workspace") as refused:
        instance_start(instance=instance)
    assert refused.value.code == "instances:move-required"  # type: ignore[attr-defined]
    instance_start(instance=instance, move=True)
    move = wait_until(
        lambda: (m := InstanceMove.objects.get(instance=instance)).status != "snapshotting" and m,
        timeout=120,
        what="the snapshot on a",
    )
    assert move.status == "restoring", move.last_error
    stored = SNAPSHOTS / move.snapshot.object_key
    stored.write_bytes(b"not a zstd stream" * 64)

    fleet(HOST_B)
    move = wait_until(
        lambda: (m := InstanceMove.objects.get(pk=move.pk)).status != "restoring" and m, timeout=120, what="the restore"
    )
    assert move.status == "failed"
    instance.refresh_from_db()
    assert (instance.status, instance.host) == ("stopped", a)
    assert "move" in instance.last_error
    assert instance.events.filter(kind=Kind.MOVE_FAILED).exists()
    assert not workspace_dir(HOST_B, instance).exists()

    # a's files are intact: given its GPU back, it starts there with them.
    gpus_cordon(gpus=Gpu.objects.filter(host=a), cordoned=False)
    instance_start(instance=instance)
    instance = wait_for_status(instance, "running", "failed", timeout=120)
    assert (instance.status, instance.host) == ("running", a), instance.last_error
    assert inside(instance, "cat /workspace/kept").stdout == f"{CONTENT}\n"
    assert instance.last_error == ""


def test_from_an_unreachable_host_it_moves_from_a_snapshot_and_the_old_copy_goes_when_it_returns(
    settings, alice, two_hosts, fleet, fleet_template
):
    settings.GPUCLOUD_PLACEMENT_POLICY = "pack"
    a, b = two_hosts
    worker_a = fleet(HOST_A)
    fleet(HOST_B)
    instance = stopped_on_a_with_a_file(alice, fleet_template, a)
    snapshot = snapshot_create(instance=instance, name="mine")
    snapshot = wait_until(
        lambda: (s := Snapshot.objects.get(pk=snapshot.pk)).status in ("ready", "failed") and s,
        timeout=120,
        what="the customer's snapshot",
    )
    assert snapshot.status == "ready", snapshot.last_error

    worker_a.kill()
    wait_until(lambda: marked(a, "unreachable"), timeout=liveness_bound().total_seconds() + 10, what="a unreachable")
    api = APIClient()
    api.force_authenticate(alice)
    path = f"/api/gpu/instances/{instance.public_id}/start"
    asked = api.post(path).json()["error"]
    assert (asked["code"], asked["detail"]["reason"]) == ("instances:move-required", "unreachable")
    assert api.post(f"{path}?move=1").status_code == 202

    instance = wait_for_status(instance, "running", "failed", timeout=300)
    assert (instance.status, instance.host) == ("running", b), instance.last_error
    assert inside_b(instance, "cat /workspace/kept").stdout == f"{CONTENT}\n"
    move = InstanceMove.objects.get(instance=instance)
    assert (move.status, move.snapshot, move.snapshot_made) == ("done", snapshot, False)
    assert Snapshot.objects.get(pk=snapshot.pk).status == "ready"  # the customer's: kept (and billed)
    assert workspace_dir(HOST_A, instance).exists()  # a is down: its copy waits for it

    fleet(HOST_A)
    wait_until(lambda: marked(a, "online"), timeout=60, what="a back")
    wait_until(lambda: not workspace_dir(HOST_A, instance).exists(), timeout=60, what="a's old copy removed")
    instance.refresh_from_db()
    assert (instance.status, instance.host) == ("running", b)
