"""The whole lifecycle on real Docker with a real Celery worker, proven over SSH."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from django.conf import settings

from instances import selectors
from instances.access.crypto import decrypt
from instances.api.instances import NOTE_RESTART
from instances.errors import StartBackoff
from instances.host.workspaces import workspace_open, workspace_path
from instances.models import Instance, InstanceEvent, PortBinding
from instances.services import (
    instance_destroy,
    instance_launch,
    instance_logs,
    instance_restart,
    instance_start,
    instance_stop,
)
from instances.services.upkeep import workspace_cleanup
from instances.tasks import instance_provision
from tests.containers import (
    host_port,
    inspect,
    labelled_containers,
    root_password,
    ssh_run,
    wait_for_status,
)
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.docker, pytest.mark.celery]

Kind = InstanceEvent.Kind


def launch(user, template, **overrides) -> Instance:
    values = {"user": user, "template": template, "gpu_type": "rtx-5090", "storage_gb": 20, "access": ["ssh"]}
    values.update(overrides)
    return instance_launch(**values)


def gpu_is_free(sku: str = "rtx-5090") -> bool:
    return next(r for r in selectors.availability() if r["sku"] == sku)["free"] == 1


def kinds(instance: Instance) -> list[str]:
    return list(instance.events.order_by("at", "id").values_list("kind", flat=True))


def test_launch_ssh_stop_start_destroy_keeps_the_workspace_until_the_grace(celery_worker, alice, this_host):
    template = TemplateFactory()
    instance = wait_for_status(launch(alice, template), "running", "failed")
    assert instance.status == "running", instance.last_error
    password = root_password(instance)

    assert "uid=0(root)" in ssh_run(instance, "id", password=password)
    ssh_run(instance, "echo persisted > /workspace/hello", password=password)
    assert not gpu_is_free()

    instance_stop(instance=instance)
    instance = wait_for_status(instance, "stopped")
    assert labelled_containers(instance=instance.public_id, host=this_host.name) == []
    assert instance.gpu is None
    assert not PortBinding.objects.filter(instance=instance).exists()
    assert gpu_is_free()
    with workspace_open(instance=instance) as files:  # its own filesystem, unmounted while stopped
        assert (files / "hello").read_text() == "persisted\n"

    instance_start(instance=instance)
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    assert ssh_run(instance, "cat /workspace/hello", password=password) == "persisted\n"

    instance_destroy(instance=instance)
    instance = wait_for_status(instance, "terminated")
    assert labelled_containers(instance=instance.public_id) == []
    assert gpu_is_free()
    assert workspace_path(instance=instance).exists()  # kept through the grace period
    assert workspace_cleanup(host=this_host, grace_seconds=3600) == []
    assert workspace_cleanup(host=this_host, grace_seconds=0) == [instance.public_id]
    assert not workspace_path(instance=instance).parent.exists()

    # Billing's facts: two running segments, each closed exactly once, in order.
    assert [k for k in kinds(instance) if k in (Kind.STARTED, Kind.ENDED)] == [
        Kind.STARTED,
        Kind.ENDED,
        Kind.STARTED,
        Kind.ENDED,
    ]
    assert Kind.WORKSPACE_REMOVED in kinds(instance)
    for event in instance.events.all():  # no secret ever reaches the timeline
        assert password not in event.message
        assert password not in str(event.data)


def test_the_launched_container_carries_every_hardening_setting(celery_worker, alice, this_host):
    template = TemplateFactory()
    instance = wait_for_status(launch(alice, template, access=["ssh", "jupyter"]), "running", "failed")
    assert instance.status == "running", instance.last_error

    attrs = inspect(instance.container_id)
    host_config, config = attrs["HostConfig"], attrs["Config"]
    assert host_config["CapDrop"] == ["ALL"]
    assert sorted(host_config["CapAdd"]) == sorted(template.cap_add)
    assert host_config["SecurityOpt"] == ["no-new-privileges"]
    assert host_config["Privileged"] is False
    assert host_config["PidsLimit"] == settings.GPUCLOUD_PIDS_LIMIT
    assert host_config["Memory"] == instance.gpu_type.ram_limit_mb * 1024 * 1024
    assert host_config["MemorySwap"] == host_config["Memory"]
    assert 0 < host_config["NanoCpus"] <= int(instance.gpu_type.cpu_limit * 1_000_000_000)
    assert host_config["NetworkMode"] == f"gpucloud-{instance.public_id}"
    assert host_config["PidMode"] == ""
    assert host_config["IpcMode"] == "private"
    assert host_config["UTSMode"] == ""
    assert not host_config.get("DeviceRequests")
    assert f"NVIDIA_VISIBLE_DEVICES={instance.gpu.index}" in config["Env"]
    assert not any(e.startswith("GPUCLOUD_ROOT_PASSWORD=") for e in config["Env"])  # only a hash
    mounts = [(m["Source"], m["Destination"], m["Type"]) for m in attrs["Mounts"]]
    assert mounts == [(str(workspace_path(instance=instance)), "/workspace", "bind")]
    assert all("docker.sock" not in m["Source"] for m in attrs["Mounts"])
    for binding in instance.ports.all():
        published = host_config["PortBindings"][f"{binding.container_port}/tcp"]
        assert published == [{"HostIp": "127.0.0.1", "HostPort": str(binding.host_port)}]
        assert this_host.port_range_start <= binding.host_port <= this_host.port_range_end < 32768  # not ephemeral
    assert {k: v for k, v in config["Labels"].items() if k.count(".") == 1} == {
        "gpucloud.instance": instance.public_id,
        "gpucloud.owner": str(alice.pk),
        "gpucloud.host": this_host.name,
    }
    # The access token opens the HTTP service; nothing else does.
    token = decrypt(instance.access_token_encrypted)
    url = f"http://127.0.0.1:{host_port(instance, 'jupyter')}/api/status"  # JupyterLab's API
    assert urllib.request.urlopen(f"{url}?token={token}", timeout=5).status == 200  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 403


def test_a_missing_image_fails_with_that_reason_and_releases_everything(celery_worker, alice, this_host):
    template = TemplateFactory(slug="missing", image="gpucloud-test/does-not-exist:latest")
    instance = wait_for_status(launch(alice, template), "failed", "running")

    assert instance.status == "failed"
    # The worker tried to pull it: the reason is the registry's (here: none reachable).
    assert instance.last_error.startswith("pull gpucloud-test/does-not-exist:latest: "), instance.last_error
    assert instance.gpu is None
    assert not PortBinding.objects.filter(instance=instance).exists()
    assert labelled_containers(instance=instance.public_id) == []
    assert gpu_is_free()
    assert Kind.FAILED in kinds(instance)
    assert Kind.STARTED not in kinds(instance)


def test_a_container_that_exits_at_start_fails_the_launch(celery_worker, alice, this_host):
    template = TemplateFactory(slug="exits", command=["sh", "-c", "echo giving up; exit 7"])
    instance = wait_for_status(launch(alice, template), "failed", "running")

    assert instance.status == "failed"
    assert "code 7" in instance.last_error
    assert labelled_containers(instance=instance.public_id) == []
    assert gpu_is_free()
    # The container ran (on its GPU) before it died: billed from its start, closed at the
    # failure, and the next start of the instance waits (issue 16).
    assert [k for k in kinds(instance) if k in (Kind.STARTED, Kind.ENDED)] == [Kind.STARTED, Kind.ENDED]
    assert instance.failed_starts == 1
    with pytest.raises(StartBackoff) as refused:
        instance_start(instance=instance)
    assert refused.value.detail["retry_after_seconds"] > 0


def test_the_same_launch_task_delivered_twice_makes_one_container(celery_worker, alice, this_host):
    template = TemplateFactory()
    instance = launch(alice, template)
    # The launch already enqueued one; deliver it again, twice over.
    for _ in range(2):
        instance_provision.apply_async(kwargs={"instance_id": instance.pk}, queue=this_host.queue)

    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    assert labelled_containers(instance=instance.public_id) == [instance.container_id]
    assert kinds(instance).count(Kind.STARTED) == 1
    assert kinds(instance).count(Kind.PROVISIONING) == 1
    assert "uid=0(root)" in ssh_run(instance, "id", password=root_password(instance))


def ports_of(instance: Instance) -> dict[str, int]:
    return dict(instance.ports.values_list("name", "host_port"))


def test_restart_ends_one_segment_and_begins_another_on_the_same_gpu(celery_worker, alice, this_host):
    instance = wait_for_status(launch(alice, TemplateFactory(), access=["ssh", "jupyter"]), "running", "failed")
    gpu, first_container, ports = instance.gpu, instance.container_id, ports_of(instance)

    instance_restart(instance=instance)
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    # What the API, the pages and the README promise: a restart keeps its GPU and ports.
    assert instance.gpu.uuid == gpu.uuid
    assert ports_of(instance) == ports
    # ... and so does the new container as Docker sees it (a simulated GPU is its index).
    seen = inspect(instance.container_id)
    assert f"NVIDIA_VISIBLE_DEVICES={gpu.index}" in seen["Config"]["Env"]
    published = {int(b[0]["HostPort"]) for b in seen["HostConfig"]["PortBindings"].values()}
    assert published == set(ports.values())
    assert "A restart keeps its GPU, its ports" in NOTE_RESTART
    assert instance.container_id != first_container
    assert labelled_containers(instance=instance.public_id) == [instance.container_id]
    assert [k for k in kinds(instance) if k in (Kind.STARTED, Kind.ENDED)] == [Kind.STARTED, Kind.ENDED, Kind.STARTED]
    assert "Server listening on 0.0.0.0 port 22" in instance_logs(instance=instance, lines=50)


def test_billing_stops_an_instance_with_its_reason(celery_worker, alice, this_host):
    instance = wait_for_status(launch(alice, TemplateFactory()), "running", "failed")

    instance_stop(instance=instance, source="billing", reason="balance exhausted")
    instance = wait_for_status(instance, "stopped")
    assert instance.stop_reason == "balance exhausted"
    requested = instance.events.get(kind=Kind.STOP_REQUESTED)
    assert (requested.source, requested.message) == ("billing", "balance exhausted")
    ended = instance.events.get(kind=Kind.ENDED)
    assert instance.started_at <= ended.at == instance.stopped_at


def test_one_tenants_container_cannot_reach_anothers(celery_worker, alice, bob, this_host):
    template = TemplateFactory()
    mine = wait_for_status(launch(alice, template), "running", "failed")
    theirs = wait_for_status(launch(bob, template, gpu_type="rtx-pro-6000"), "running", "failed")
    assert (mine.status, theirs.status) == ("running", "running")
    their_address = next(iter(inspect(theirs.container_id)["NetworkSettings"]["Networks"].values()))["IPAddress"]

    probe = (
        "python3 -c 'import socket,sys\n"
        "try:\n"
        f'    socket.create_connection(("{their_address}", 22), timeout=3); print("reached")\n'
        "except OSError as exc:\n"
        '    print("blocked", exc)\''
    )
    assert ssh_run(mine, probe, password=root_password(mine)).startswith("blocked")
