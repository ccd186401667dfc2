"""instances.host.runtime against the real Docker engine and the test image."""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings

from instances.errors import RuntimeFailure
from instances.host.runtime import ContainerSpec, DockerRuntime, PortSpec
from tests.containers import docker, inspect, labelled_containers
from tests.factories import TEST_IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture
def runtime() -> DockerRuntime:
    return DockerRuntime(base_url=settings.GPUCLOUD_DOCKER_URL)


def make_spec(tmp_path, *, image: str = TEST_IMAGE, command: list[str] | None = None, **overrides) -> ContainerSpec:
    public_id = "inst_" + secrets.token_hex(6)
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    values = {
        "name": f"gpucloud-{public_id}",
        "image": image,
        "command": command,
        "labels": {
            "gpucloud.instance": public_id,
            "gpucloud.owner": "1",
            "gpucloud.host": settings.GPUCLOUD_HOST_NAME,
        },
        "env": {"GPUCLOUD_ROOT_PASSWORD": "not-a-real-secret", "NVIDIA_VISIBLE_DEVICES": "0"},
        "workspace": str(workspace),
        "bind_address": "127.0.0.1",
        "ports": [PortSpec(container_port=22, host_port=21990 + secrets.randbelow(9))],
        "cap_add": ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "NET_BIND_SERVICE", "KILL"],
        "cpu_limit": 1.5,
        "memory_mb": 512,
        "pids_limit": 128,
    }
    values.update(overrides)
    return ContainerSpec(**values)


def test_it_runs_a_hardened_container_that_answers_on_its_port(runtime, tmp_path):
    spec = make_spec(tmp_path)
    state = runtime.run(spec)
    ready = runtime.wait_ready(container_id=state.id, ports=[22], timeout_seconds=30)

    assert ready.running
    attrs = inspect(state.id)
    host_config = attrs["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]
    assert set(host_config["CapAdd"]) == set(spec.cap_add)
    assert host_config["SecurityOpt"] == ["no-new-privileges"]
    assert host_config["Privileged"] is False
    assert host_config["PidsLimit"] == 128
    assert host_config["Memory"] == 512 * 1024 * 1024
    assert host_config["NanoCpus"] == 1_500_000_000
    assert host_config["NetworkMode"] == spec.name
    assert host_config["PidMode"] == ""
    assert host_config["IpcMode"] == "private"
    assert not host_config.get("DeviceRequests")  # a simulated GPU asks for no device
    assert [(m["Source"], m["Destination"]) for m in attrs["Mounts"]] == [(spec.workspace, "/workspace")]
    published = host_config["PortBindings"]["22/tcp"]
    assert published == [{"HostIp": "127.0.0.1", "HostPort": str(spec.ports[0].host_port)}]
    assert attrs["Config"]["Labels"]["gpucloud.instance"] == spec.labels["gpucloud.instance"]


def test_a_real_gpu_is_requested_by_uuid_never_by_count(runtime, tmp_path):
    """Checked on the request the runtime builds: this engine has no NVIDIA runtime."""
    args = runtime._create_args(make_spec(tmp_path, gpu_uuid="GPU-0b5e6d1c-aaaa-bbbb-cccc-000000000001"))

    (request,) = args["device_requests"]
    assert request["DeviceIDs"] == ["GPU-0b5e6d1c-aaaa-bbbb-cccc-000000000001"]
    assert request["Capabilities"] == [["gpu"]]
    assert not request.get("Count")
    assert args["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-0b5e6d1c-aaaa-bbbb-cccc-000000000001"


def test_it_replaces_a_stale_container_of_the_same_name(runtime, tmp_path):
    spec = make_spec(tmp_path, command=["sleep", "300"], ports=[])
    first = runtime.run(spec)
    second = runtime.run(spec)

    assert first.id != second.id
    assert labelled_containers(instance=spec.labels["gpucloud.instance"]) == [second.id]


def test_a_missing_image_is_a_runtime_failure_and_leaves_nothing(runtime, tmp_path):
    spec = make_spec(tmp_path, image="gpucloud-test/no-such-image:latest")
    with pytest.raises(RuntimeFailure, match="image"):
        runtime.run(spec)
    assert labelled_containers(instance=spec.labels["gpucloud.instance"]) == []


def test_a_container_that_exits_fails_the_wait_with_its_exit_code(runtime, tmp_path):
    state = runtime.run(make_spec(tmp_path, command=["sh", "-c", "exit 3"], ports=[]))
    with pytest.raises(RuntimeFailure, match="code 3"):
        runtime.wait_ready(container_id=state.id, ports=[22], timeout_seconds=30)


def test_a_port_that_never_opens_fails_the_wait(runtime, tmp_path):
    state = runtime.run(make_spec(tmp_path, command=["sleep", "300"]))
    with pytest.raises(RuntimeFailure, match="did not answer"):
        runtime.wait_ready(container_id=state.id, ports=[22], timeout_seconds=1)


def test_stop_records_the_finish_time_and_remove_is_idempotent(runtime, tmp_path):
    spec = make_spec(tmp_path, command=["sleep", "300"], ports=[])
    runtime.run(spec)

    stopped = runtime.stop(spec.name, timeout_seconds=1)
    assert stopped is not None
    assert not stopped.running
    assert stopped.finished_at is not None
    runtime.remove(spec.name)
    runtime.remove(spec.name)
    assert runtime.inspect(spec.name) is None
    assert docker("network", "ls", "-q", "--filter", f"name=^{spec.name}$").strip() == ""


def test_logs_and_list_by_label(runtime, tmp_path):
    spec = make_spec(tmp_path, command=["sh", "-c", "echo hello-from-the-container; sleep 300"], ports=[])
    runtime.run(spec)
    found = runtime.list(labels={"gpucloud.instance": spec.labels["gpucloud.instance"]})

    assert [c.name for c in found] == [spec.name]
    for _ in range(50):
        if "hello-from-the-container" in runtime.logs(spec.name, lines=10):
            break
    assert "hello-from-the-container" in runtime.logs(spec.name, lines=10)
    assert runtime.logs("gpucloud-inst_000000000000", lines=10) == ""


def test_an_unreachable_engine_is_an_infrastructure_error(tmp_path):
    from instances.errors import InfrastructureError

    with pytest.raises(InfrastructureError):
        DockerRuntime(base_url=f"unix://{tmp_path}/no-docker.sock").inspect("anything")
