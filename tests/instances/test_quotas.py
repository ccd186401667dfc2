"""Workspace quotas on a real loop-mounted filesystem, filled from inside real containers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from instances.host import loopfs
from instances.host.preflight import Probe, host_preflight, preflight_evaluate, quota_check
from instances.host.runtime import get_runtime
from instances.host.workspaces import image_path, workspace_ensure, workspace_open, workspace_path
from instances.models import Instance, InstanceEvent, WorkspaceUsage
from instances.services import instance_destroy, instance_launch, instance_resize, instance_start, instance_stop
from instances.services.locks import instance_lock
from instances.services.reconcile import host_reconcile
from instances.services.upkeep import workspace_cleanup, workspace_upkeep
from tests.containers import docker, inside, inspect, wait_for_status
from tests.factories import InstanceFactory, TemplateFactory
from tests.processes import wait_until

GIB = 2**30


def launch(user, template, *, storage_gb: int, gpu_type: str = "rtx-5090") -> Instance:
    instance = instance_launch(user=user, template=template, gpu_type=gpu_type, storage_gb=storage_gb, access=["ssh"])
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    return instance


def loop_devices_of(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout


@pytest.mark.docker
@pytest.mark.celery
def test_a_full_workspace_fails_with_enospc_inside_and_nothing_else_notices(
    celery_worker, alice, bob, this_host, settings
):
    settings.GPUCLOUD_STORAGE_GB_MIN = 1
    template = TemplateFactory()
    small = launch(alice, template, storage_gb=1)
    other = launch(bob, template, storage_gb=10, gpu_type="rtx-pro-6000")
    image = image_path(instance=small)

    # Writing 1.5 GB into a 1 GB workspace stops at about 1 GB with ENOSPC, inside.
    filled = inside(small, "dd if=/dev/zero of=/workspace/fill bs=1M count=1536 conv=fsync")
    assert filled.returncode != 0
    assert "No space left on device" in filled.stderr
    written = int(inside(small, "stat -c %s /workspace/fill").stdout)
    assert 0.9 * GIB < written <= GIB
    assert inside(small, "dd if=/dev/zero of=/workspace/more bs=1M count=8 conv=fsync").returncode != 0
    # The host paid at most the quota (plus filesystem metadata) for it.
    assert image.stat().st_blocks * 512 <= GIB
    assert int(inside(small, "df -B1 --output=size /workspace | tail -1").stdout) <= GIB

    # Another tenant on the same host and data root keeps writing.
    wrote = inside(other, "dd if=/dev/zero of=/workspace/data bs=1M count=64 conv=fsync && echo ok")
    assert wrote.returncode == 0, wrote.stderr
    free = os.statvfs(settings.GPUCLOUD_DATA_ROOT)
    assert free.f_bavail * free.f_frsize > settings.GPUCLOUD_WORKSPACE_MIN_FREE_MB * 2**20

    # Usage is measured, and the customer is told once when the workspace passed 90%.
    report = workspace_upkeep(host=this_host)
    assert {small.public_id, other.public_id} <= set(report["measured"])
    usage = WorkspaceUsage.objects.get(instance=small)
    assert usage.size_bytes <= GIB
    assert usage.percent >= 95  # ext4 keeps a few MB for itself
    assert WorkspaceUsage.objects.get(instance=other).percent < 90
    workspace_upkeep(host=this_host)
    low = InstanceEvent.objects.filter(instance=small, kind=InstanceEvent.Kind.STORAGE_LOW)
    assert low.count() == 1
    assert "No space left on device" in low.get().message
    assert not InstanceEvent.objects.filter(instance=other, kind=InstanceEvent.Kind.STORAGE_LOW).exists()

    # Stopped: unmounted, its loop device freed, its files kept in the image.
    instance_stop(instance=small)
    small = wait_for_status(small, "stopped")
    assert not loopfs.is_mounted(mountpoint=workspace_path(instance=small))
    # The kernel lets go of an auto-clearing loop device after the unmount, not during it.
    wait_until(lambda: loop_devices_of(image) == "", timeout=30, what="the loop device to be released")
    with workspace_open(instance=small) as files:
        assert (files / "fill").stat().st_size == written
    # The kernel lets go of an auto-clearing loop device after the unmount, not during it.
    wait_until(lambda: loop_devices_of(image) == "", timeout=30, what="the loop device to be released")

    # Destroyed, then removed after the grace period: nothing mounted, nothing left.
    for instance in (small, other):
        instance_destroy(instance=instance)
        wait_for_status(instance, "terminated")
    assert not loopfs.is_mounted(mountpoint=workspace_path(instance=other))
    assert set(workspace_cleanup(host=this_host, grace_seconds=0)) >= {small.public_id, other.public_id}
    assert not image.parent.exists()
    assert loop_devices_of(image_path(instance=other)) == ""


@pytest.mark.docker
@pytest.mark.celery
def test_a_full_workspace_grown_after_a_stop_takes_more_and_keeps_its_files(celery_worker, alice, this_host, settings):
    settings.GPUCLOUD_STORAGE_GB_MIN = 1
    instance = launch(alice, TemplateFactory(), storage_gb=1)
    assert inside(
        instance, "echo kept > /workspace/kept && dd if=/dev/zero of=/workspace/fill bs=1M count=1536"
    ).returncode
    instance_stop(instance=instance)
    instance = wait_for_status(instance, "stopped")
    instance_resize(instance=instance, storage_gb=2)
    assert loopfs.image_size(image=image_path(instance=instance)) == GIB  # grown by the host, at the next start

    instance_start(instance=instance)
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    assert loopfs.image_size(image=image_path(instance=instance)) == 2 * GIB
    assert inside(instance, "cat /workspace/kept").stdout == "kept\n"
    more = inside(instance, "dd if=/dev/zero of=/workspace/more bs=1M count=512 conv=fsync")
    assert more.returncode == 0, more.stderr
    assert int(inside(instance, "df -B1 --output=size /workspace | tail -1").stdout) > 1.9 * GIB
    over = inside(instance, "dd if=/dev/zero of=/workspace/over bs=1M count=1024 conv=fsync")
    assert "No space left on device" in over.stderr  # and 2 GB is a hard limit again
    instance_destroy(instance=instance)
    wait_for_status(instance, "terminated")
    assert workspace_cleanup(host=this_host, grace_seconds=0) == [instance.public_id]


@pytest.mark.docker
@pytest.mark.celery
def test_a_container_removed_out_of_band_leaves_no_workspace_mounted(celery_worker, alice, this_host):
    instance = launch(alice, TemplateFactory(), storage_gb=10)
    mounted = [m for m in inspect(instance.container_id)["Mounts"] if m["Destination"] == "/workspace"]
    assert mounted[0]["Source"] == str(workspace_path(instance=instance))
    assert loopfs.is_mounted(mountpoint=workspace_path(instance=instance))
    # The writable layer: bounded where the engine can, and then asked for.
    bounded, words = get_runtime(base_url=this_host.docker_url).writable_layer_bound()
    storage_opt = inspect(instance.container_id)["HostConfig"].get("StorageOpt") or {}
    assert storage_opt == ({"size": f"{settings.GPUCLOUD_CONTAINER_DISK_GB}G"} if bounded else {})
    assert words

    docker("rm", "-f", instance.container_name)
    host_reconcile(host=this_host)
    instance.refresh_from_db()
    assert instance.status in ("failed", "stopped")
    assert not loopfs.is_mounted(mountpoint=workspace_path(instance=instance))
    assert loop_devices_of(image_path(instance=instance)) == ""


def test_upkeep_unmounts_a_workspace_whose_instance_has_no_container(alice, this_host):
    """As after a worker died between a container's removal and the unmount."""
    instance = InstanceFactory(owner=alice, host=this_host, status=Instance.Status.STOPPED, storage_gb=10)
    path = workspace_ensure(instance=instance)
    assert loopfs.is_mounted(mountpoint=path)
    assert (path / "lost+found").is_dir()  # its own ext4, not a directory of the data root
    try:
        with instance_lock(instance_id=instance.pk):  # a start at work on it: left alone
            # (Other tests' leftovers under the data root may go now; this one stays.)
            assert instance.public_id not in workspace_upkeep(host=this_host)["unmounted"]
        assert loopfs.is_mounted(mountpoint=path)
        report = workspace_upkeep(host=this_host)
        assert instance.public_id in report["unmounted"]
        assert not loopfs.is_mounted(mountpoint=path)
        # A start mounts it again (after a reboot too: nothing is remembered but the image).
        assert workspace_ensure(instance=instance) == path
        assert loopfs.is_mounted(mountpoint=path)
    finally:
        loopfs.unmount(mountpoint=path)


def test_the_quota_probe_fills_a_real_image_past_its_size(tmp_path):
    assert loopfs.probe(root=tmp_path) == ""
    assert loopfs.mounts_under(root=tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_the_preflight_refuses_broken_quotas_and_flags_a_host_without_them(this_host, settings):
    probe = Probe(runc_output="runc version 1.2.5", toolkit_output=None, runc_changelog="")
    passed = host_preflight(host=this_host, probe=probe)  # probes this machine's loop devices
    assert passed.ok, passed.message
    assert "workspace quotas: one loop-mounted ext4" in passed.message
    assert "Container writable layer:" in passed.message

    broken = Probe(runc_output="runc version 1.2.5", toolkit_output=None, runc_changelog="",
                   quota_problem="no loop devices (/dev/loop-control is missing)")  # fmt: skip
    refused = host_preflight(host=this_host, probe=broken)
    assert refused.blocked
    assert "GPUCLOUD_WORKSPACE_QUOTA=none" in refused.message
    this_host.refresh_from_db()
    assert this_host.facts["preflight"]["blocked"] is True

    settings.GPUCLOUD_WORKSPACE_QUOTA = "none"  # the operator's choice: take instances without
    flagged = host_preflight(host=this_host, probe=Probe(runc_output="runc version 1.2.5", toolkit_output=None,
                                                         runc_changelog=""))  # fmt: skip
    assert (flagged.ok, flagged.blocked, flagged.overridden) == (False, False, False)
    assert "flagged: workspace quotas are off" in flagged.message


def test_quota_checks_judge_the_method_and_the_probe():
    ok = quota_check(method="loop", problem="")
    off = quota_check(method="none", problem="")
    broken = quota_check(method="loop", problem="missing tools: mkfs.ext4")
    assert (ok.ok, off.ok, off.blocking, broken.ok, broken.blocking) == (True, False, False, False, True)
    result = preflight_evaluate(
        runc_output="runc version 1.2.5", toolkit_output=None, needs_toolkit=False, quota=broken, override=True
    )
    assert (result.ok, result.blocked, result.overridden) == (False, False, True)
