"""When a start needs a move, and what a move may do (rows only: PostgreSQL, no worker;
the tasks a move sends are captured, not run). tests/fleet/test_move.py moves real
workspaces between two real workers."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from instances.access.tokens import token_create
from instances.errors import MoveImpossible, MoveRequired
from instances.models import Gpu, Host, Instance, InstanceMove, Snapshot, SnapshotRestore, WorkspaceUsage
from instances.selectors import snapshot_segment_starts
from instances.services import instance_launch, instance_start
from instances.services.events import Kind, Source, event_add
from instances.services.fleet import gpus_cordon, host_drain
from instances.services.liveness import hosts_liveness
from instances.services.move import move_fail, restore_request

pytestmark = pytest.mark.django_db
CLI = Path(__file__).resolve().parents[2] / "cli"


def stopped_on(host: Host, user, template) -> Instance:
    instance = instance_launch(user=user, template=template.slug, gpu_type="rtx-5090", storage_gb=20, access=["ssh"])
    assert instance.host == host
    Instance.objects.filter(pk=instance.pk).update(status="stopped", gpu=None, stopped_at=timezone.now())
    instance.ports.all().delete()
    WorkspaceUsage.objects.create(
        instance=instance, used_bytes=3 * 2**20, size_bytes=20 * 2**30, measured_at=timezone.now()
    )
    return Instance.objects.select_related("host").get(pk=instance.pk)


def ready_snapshot(instance: Instance, *, at) -> Snapshot:
    return Snapshot.objects.create(
        owner=instance.owner, instance=instance, status="ready", store="local", object_key="k", size_bytes=10,
        content_bytes=10, sha256="0" * 64, ready_at=at,
    )  # fmt: skip


def moving_from_drained(instance: Instance, host: Host, capture) -> InstanceMove:
    """`host` drained, the instance's move asked (its tasks captured, not sent)."""
    host_drain(host=host)
    with capture():
        instance_start(instance=instance, move=True)
    return InstanceMove.objects.get(instance=instance)


@pytest.fixture
def on_a(settings, alice, two_hosts, fleet_template) -> Instance:
    settings.GPUCLOUD_PLACEMENT_POLICY = "pack"
    return stopped_on(two_hosts[0], alice, fleet_template)


def test_its_own_host_with_a_free_gpu_starts_it_there(on_a, two_hosts, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        started = instance_start(instance=on_a)
    assert (started.status, started.host) == ("starting", two_hosts[0])


def test_a_start_that_needs_a_move_says_so_with_the_size_and_changes_nothing(on_a, two_hosts):
    a, _b = two_hosts
    gpus_cordon(gpus=Gpu.objects.filter(host=a), cordoned=True)
    with pytest.raises(MoveRequired) as asked:
        instance_start(instance=on_a)
    assert asked.value.status == 409
    assert asked.value.detail == {"reason": "no-free-gpu", "size_bytes": 3 * 2**20}
    assert "3.0 MiB" in asked.value.message
    on_a.refresh_from_db()
    assert (on_a.status, on_a.host, on_a.gpu) == ("stopped", a, None)
    assert not InstanceMove.objects.exists()
    assert not Snapshot.objects.exists()


def test_no_other_host_free_is_no_capacity_not_a_move(on_a, two_hosts):
    gpus_cordon(gpus=Gpu.objects.all(), cordoned=True)
    with pytest.raises(Exception, match="is free right now") as refused:
        instance_start(instance=on_a, move=True)
    assert refused.value.code == "instances:no-gpu-available"  # type: ignore[attr-defined]


def test_a_move_snapshots_on_the_old_host_and_a_second_start_waits_for_it(
    on_a, two_hosts, django_capture_on_commit_callbacks
):
    a, b = two_hosts
    host_drain(host=a)
    with django_capture_on_commit_callbacks() as sent:
        still = instance_start(instance=on_a, move=True)
    assert (still.status, still.host) == ("stopped", a)
    move = InstanceMove.objects.get(instance=on_a)
    assert (move.status, move.from_host, move.to_host, move.snapshot_made) == ("snapshotting", a, b, True)
    assert move.snapshot.status == "pending"
    assert len([c for c in sent if c.__qualname__.startswith("_send")]) == 1  # the snapshot task, to a
    event = on_a.events.get(kind=Kind.MOVE_REQUESTED)
    assert event.data["reason"] == "draining"
    assert event.data["size_bytes"] == 3 * 2**20
    with pytest.raises(MoveImpossible):
        instance_start(instance=on_a, move=True)


def test_an_unreachable_host_is_moved_from_only_with_a_snapshot_taken_since_the_stop(
    on_a, two_hosts, django_capture_on_commit_callbacks
):
    a, b = two_hosts
    Host.objects.filter(pk=a.pk).update(status=Host.Status.UNREACHABLE, status_reason="no heartbeat since …")
    on_a.refresh_from_db()
    ready_snapshot(on_a, at=on_a.stopped_at - timedelta(minutes=1))  # older than the stop: stale
    with pytest.raises(MoveImpossible, match="unreachable"):
        instance_start(instance=on_a, move=True)
    assert not InstanceMove.objects.exists()

    fresh = ready_snapshot(on_a, at=on_a.stopped_at + timedelta(seconds=1))
    with django_capture_on_commit_callbacks():
        instance_start(instance=on_a, move=True)
    move = InstanceMove.objects.get(instance=on_a)
    assert (move.status, move.snapshot, move.snapshot_made, move.to_host) == ("restoring", fresh, False, b)
    assert SnapshotRestore.objects.get(pk=move.restore_id).snapshot == fresh


def test_a_moves_own_snapshot_is_never_billed_and_a_failed_move_keeps_it_on_its_host(
    on_a, two_hosts, django_capture_on_commit_callbacks
):
    a, _b = two_hosts
    move = moving_from_drained(on_a, a, django_capture_on_commit_callbacks)
    own = ready_snapshot(on_a, at=timezone.now())
    Snapshot.objects.filter(pk=move.snapshot_id).update(status="ready", size_bytes=10, sha256="1" * 64)
    for snapshot in (move.snapshot, own):
        event_add(instance=on_a, kind=Kind.SNAPSHOT_READY, source=Source.WORKER,
                  data={"snapshot": snapshot.public_id, "size_bytes": 10})  # fmt: skip
    billed = snapshot_segment_starts(after_event_id=0, until=timezone.now() + timedelta(seconds=1))
    assert [e.snapshot for e in billed] == [own.public_id]

    with django_capture_on_commit_callbacks():
        failed = move_fail(move=move, reason="the restore was refused")
    assert failed.status == "failed"
    on_a.refresh_from_db()
    assert (on_a.status, on_a.host) == ("stopped", a)
    assert "the restore was refused" in on_a.last_error
    assert Snapshot.objects.get(pk=move.snapshot_id).status == "deleted"
    assert Snapshot.objects.get(pk=own.pk).status == "ready"
    assert on_a.events.filter(kind=Kind.MOVE_FAILED).exists()


def test_the_page_offers_the_move_with_its_size_and_its_button_moves_it(
    client, alice, on_a, two_hosts, django_capture_on_commit_callbacks
):
    host_drain(host=two_hosts[0])
    client.force_login(alice)
    page = client.get(reverse("web:instance", args=[on_a.public_id])).content.decode()
    assert "data-move-required" in page
    assert "is being drained for maintenance" in page
    assert "3.0\xa0MB" in page
    assert "Move and start" in page
    url = reverse("web:instance-action", args=[on_a.public_id, "start"])
    refused = client.post(url, follow=True).content.decode()  # the plain Start: told, nothing moves
    assert "moves its workspace" in refused
    assert not InstanceMove.objects.exists()
    with django_capture_on_commit_callbacks():
        moved = client.post(url, {"move": "1"}, follow=True).content.decode()
    assert "Moving " in moved
    assert InstanceMove.objects.get(instance=on_a).status == "snapshotting"
    assert "data-moving" in moved


def test_the_clis_start_says_a_move_is_needed_and_move_confirms_it(live_server, alice, on_a, two_hosts, tmp_path):
    """This checkout's CLI (its source, not the one installed in the environment)."""
    host_drain(host=two_hosts[0])
    _, token = token_create(user=alice, name="cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLOUD_")}
    env |= {"GPUCLOUD_URL": live_server.url, "GPUCLOUD_TOKEN": token, "HOME": str(tmp_path), "PYTHONPATH": str(CLI)}

    def gpucloud(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", "from gpucloud_cli.main import cli; cli()", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)

    asked = gpucloud("start", on_a.public_id)
    assert asked.returncode != 0
    assert "moves its workspace" in asked.stderr
    assert "--move" in asked.stderr
    assert not InstanceMove.objects.exists()
    moved = gpucloud("start", "--move", on_a.public_id)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == f"{on_a.public_id} stopped\n"
    assert InstanceMove.objects.get(instance=on_a).status == "snapshotting"


def test_a_host_lost_mid_move_fails_the_move_and_leaves_it_on_its_host(
    on_a, two_hosts, django_capture_on_commit_callbacks
):
    a, b = two_hosts
    move = moving_from_drained(on_a, a, django_capture_on_commit_callbacks)
    beat = timezone.now() - timedelta(minutes=5)
    Host.objects.filter(pk__in=[a.pk, b.pk]).update(last_heartbeat_at=beat)
    Host.objects.filter(pk=b.pk).update(last_heartbeat_at=timezone.now())  # only a is silent
    with django_capture_on_commit_callbacks():
        assert hosts_liveness().unreachable == [a.name]
    move.refresh_from_db()
    assert move.status == "failed"
    assert "unreachable" in move.last_error
    on_a.refresh_from_db()
    assert (on_a.status, on_a.host) == ("stopped", a)
    assert "unreachable" in on_a.last_error
    assert Snapshot.objects.get(pk=move.snapshot_id).status == "deleted"

    # The new host lost mid-restore: that move fails too, its restore row with it.
    Host.objects.filter(pk=a.pk).update(status=Host.Status.ONLINE, last_heartbeat_at=timezone.now())
    gpus_cordon(gpus=Gpu.objects.filter(host=a), cordoned=True)
    with django_capture_on_commit_callbacks():
        instance_start(instance=on_a, move=True)
        again = InstanceMove.objects.get(instance=on_a, status="snapshotting")
        restore_request(move=again)
    Host.objects.filter(pk=b.pk).update(last_heartbeat_at=beat)
    with django_capture_on_commit_callbacks():
        assert hosts_liveness().unreachable == [b.name]
    again.refresh_from_db()
    assert again.status == "failed"
    assert SnapshotRestore.objects.get(pk=again.restore_id).status == "failed"
    on_a.refresh_from_db()
    assert (on_a.status, on_a.host) == ("stopped", a)
