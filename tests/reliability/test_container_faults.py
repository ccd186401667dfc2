"""A container runs out of memory; the workspace root is read-only or full."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from billing.models import UsageRecord
from billing.services import meter_run
from instances import services
from instances.host.runtime import get_runtime
from instances.models import InstanceEvent
from instances.services import reconcile
from tests.containers import inspect, wait_for_status
from tests.factories import TemplateFactory
from tests.processes import wait_until
from tests.reliability.helpers import assert_nothing_leaked, labelled

pytestmark = [pytest.mark.docker, pytest.mark.celery]


def test_a_container_out_of_memory_ends_failed_and_billed_to_its_finish_time(alice, rel_host, gpu_types, start_worker):
    gpu_types["rtx-5090"].__class__.objects.filter(sku="rtx-5090").update(ram_limit_mb=64)
    hungry = TemplateFactory(
        slug="test-oom",
        ports=[],
        access_methods=[],
        # Runs a moment, then asks for 512 MB under a 64 MB limit (no swap beyond it).
        command=[
            "sh",
            "-c",
            "sleep 3; exec python3 -c 'b = bytearray(512 * 2**20); b[::4096] = b\"x\" * len(b[::4096])'",
        ],
    )
    start_worker()
    instance = services.instance_launch(user=alice, template=hungry, gpu_type="rtx-5090", storage_gb=20, access=[])
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    container = labelled(instance=instance.public_id)[0]
    wait_until(lambda: not inspect(container)["State"]["Running"], timeout=60, what="the OOM kill")
    state = get_runtime(base_url=rel_host.docker_url).inspect(container)
    assert state.oom_killed

    report = reconcile.host_reconcile(host=rel_host)
    assert report.instances_ended == [instance.public_id]
    instance.refresh_from_db()
    assert instance.status == "failed"
    assert "out of memory" in instance.last_error
    ended = InstanceEvent.objects.get(instance=instance, kind="ended")
    assert ended.at == state.finished_at
    meter_run()
    usage = UsageRecord.objects.get(instance=instance, kind="gpu")
    assert usage.ended_at == state.finished_at
    assert usage.closed_at is not None
    assert labelled(instance=instance.public_id) == []
    assert_nothing_leaked(host=rel_host)


@contextlib.contextmanager
def _mounted(path: Path, options: str, *, fill_mb: int = 0) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        if fill_mb:
            with (path / "filler").open("wb") as filler:
                filler.write(b"\0" * fill_mb * 2**20)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize(
    ("options", "fill_mb", "reason"),
    [
        ("ro,size=8m", 0, "the workspace could not be created: Read-only file system"),
        ("size=8m", 7, "the workspace disk is full"),
    ],
    ids=["read-only", "full"],
)
def test_a_launch_on_an_unusable_workspace_root_fails_with_the_reason_and_leaks_nothing(
    alice, rel_host, start_worker, options, fill_mb, reason
):
    """A worker whose GPUCLOUD_DATA_ROOT is a read-only tmpfs, or a full one (8 MB, 7 MB
    of it written, refused under its 4 MB minimum). The worker's start-up preflight finds
    the root unusable and would block the host (the scheduler's answer, tested in
    tests/security/test_preflight.py) some time after the launch: the operator's override
    keeps the host taking instances, so the launch always meets the bad root itself."""
    template = TemplateFactory()
    root = Path(settings.VAR_DIR) / "reliability" / "bad-root"
    with _mounted(root, options, fill_mb=fill_mb):
        start_worker(
            "bad-root",
            GPUCLOUD_DATA_ROOT=str(root),
            GPUCLOUD_WORKSPACE_MIN_FREE_MB="4",
            GPUCLOUD_PREFLIGHT_OVERRIDE="1",
        )
        instance = services.instance_launch(
            user=alice, template=template, gpu_type="rtx-5090", storage_gb=20, access=["ssh"]
        )
        instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "failed"
    assert reason in instance.last_error
    assert instance.gpu_id is None
    assert not instance.ports.exists()
    assert labelled() == []
    assert not InstanceEvent.objects.filter(instance=instance, kind="started").exists()
    assert_nothing_leaked(host=rel_host)
