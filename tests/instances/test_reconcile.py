"""The reconciler against real Docker: rows and containers are made to agree."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from instances import selectors
from instances.access.crypto import encrypt
from instances.host.runtime import _parse_time
from instances.models import Instance, InstanceEvent, PortBinding
from instances.services import instance_launch
from instances.services.locks import lock_acquire, lock_release
from instances.services.reconcile import host_reconcile
from instances.services.upkeep import gpu_metrics_refresh
from instances.tasks import gpu_metrics_all_hosts, reconcile_all_hosts
from tests.containers import docker, inspect, labelled_containers, wait_for_status
from tests.factories import TEST_IMAGE, InstanceFactory, TemplateFactory

pytestmark = [pytest.mark.docker, pytest.mark.celery]

Kind = InstanceEvent.Kind


@pytest.fixture
def running(celery_worker, alice, this_host) -> Instance:
    instance = instance_launch(
        user=alice, template=TemplateFactory(), gpu_type="rtx-5090", storage_gb=20, access=["ssh"]
    )
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    return instance


def rtx_5090_free() -> int:
    return next(r for r in selectors.availability() if r["sku"] == "rtx-5090")["free"]


def test_a_container_removed_out_of_band_fails_the_instance_and_frees_the_gpu(running, this_host):
    docker("rm", "-f", running.container_name)

    report = host_reconcile(host=this_host)

    running.refresh_from_db()
    assert report.instances_ended == [running.public_id]
    assert running.status == "failed"
    assert "disappeared" in running.last_error
    assert running.gpu is None
    assert not PortBinding.objects.filter(instance=running).exists()
    assert rtx_5090_free() == 1
    assert running.events.filter(kind=Kind.ENDED, source="reconciler").count() == 1
    # A second run finds nothing more to do and writes nothing more.
    assert host_reconcile(host=this_host).instances_ended == []
    assert running.events.filter(kind=Kind.ENDED).count() == 1


def test_a_killed_container_ends_the_segment_at_its_real_finish_time(running, this_host):
    docker("kill", running.container_name)
    finished_at = _parse_time(inspect(running.container_name)["State"]["FinishedAt"])

    host_reconcile(host=this_host)

    running.refresh_from_db()
    assert running.status == "failed"
    assert "code 137" in running.last_error
    ended = running.events.get(kind=Kind.ENDED)
    assert ended.at == finished_at == running.stopped_at
    assert labelled_containers(instance=running.public_id) == []


def test_the_beat_fan_out_reconciles_on_the_host_queue(running, this_host):
    docker("rm", "-f", running.container_name)

    assert reconcile_all_hosts() == 1  # enqueues reconcile_host on host.<name>

    assert wait_for_status(running, "failed").last_error == "the container disappeared"


def test_a_labelled_container_with_no_row_is_removed_and_others_are_left_alone(celery_worker, this_host):
    stray = f"gpucloud-inst_{secrets.token_hex(6)}"
    foreign = f"gpucloud-inst_{secrets.token_hex(6)}"
    docker("run", "-d", "--name", stray, "--label", f"gpucloud.host={this_host.name}",
           "--label", f"gpucloud.instance={stray.removeprefix('gpucloud-')}", TEST_IMAGE, "sleep", "300")  # fmt: skip
    other_host = f"{settings.GPUCLOUD_HOST_NAME}-elsewhere"
    docker("run", "-d", "--name", foreign, "--label", f"gpucloud.host={other_host}",
           "--label", f"gpucloud.instance={foreign.removeprefix('gpucloud-')}", TEST_IMAGE, "sleep", "300")  # fmt: skip
    try:
        report = host_reconcile(host=this_host)

        assert report.containers_removed == [stray]
        assert docker("ps", "-aq", "--filter", f"name=^{stray}$").strip() == ""
        assert docker("ps", "-q", "--filter", f"name=^{foreign}$").strip() != ""  # another host's: untouched
    finally:
        docker("rm", "-f", foreign, check=False)


def test_a_held_gpu_and_ports_with_no_live_container_are_released(running, this_host):
    # A row left `stopped` that still names its GPU and ports (a crash between steps).
    docker("rm", "-f", running.container_name)
    Instance.objects.filter(pk=running.pk).update(status="stopped")

    report = host_reconcile(host=this_host)

    running.refresh_from_db()
    assert report.gpus_released == 1
    assert report.ports_released == 1
    assert running.gpu is None
    assert not PortBinding.objects.filter(instance=running).exists()


def test_two_reconciler_runs_never_overlap(celery_worker, this_host):
    another_run = lock_acquire(name=f"reconcile:{this_host.name}")
    try:
        assert host_reconcile(host=this_host).skipped
    finally:
        lock_release(held=another_run)
    assert not host_reconcile(host=this_host).skipped


def test_gpu_metrics_fan_out_reports_nothing_for_simulated_gpus(celery_worker, this_host):
    assert gpu_metrics_all_hosts() == 1  # one task on host.<name>
    assert gpu_metrics_refresh(host=this_host) == 0
    assert not this_host.gpus.filter(metrics_at__isnull=False).exists()


def test_an_instance_whose_task_was_lost_is_sent_again_and_comes_up(celery_worker, alice, this_host):
    """The lost message is made by writing the row without enqueueing anything."""
    gpu = this_host.gpus.get(index=0)
    instance = InstanceFactory(
        owner=alice,
        template=TemplateFactory(),
        gpu_type=gpu.gpu_type,
        gpu=gpu,
        host=this_host,
        access=["ssh"],
        password_encrypted=encrypt("a-password-for-this-test"),
    )
    PortBinding.objects.create(host=this_host, host_port=21500, instance=instance, name="ssh", container_port=22)
    Instance.objects.filter(pk=instance.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    report = host_reconcile(host=this_host)

    assert report.tasks_resent == [instance.public_id]
    assert wait_for_status(instance, "running", "failed").status == "running", instance.last_error
    assert host_reconcile(host=this_host).tasks_resent == []
    assert instance.events.filter(kind=Kind.RECONCILED).count() == 1
