"""Hostile tenants: what a customer can do from inside a launched container.

Real Docker, a real Celery worker, the test image (sshd + a token-checked HTTP
service). Commands run inside with `docker exec` (root in the container, with the
container's own namespaces, cgroups and capabilities) or over SSH as the customer.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import paramiko
import pytest
from django.conf import settings

from instances import services
from instances.access.crypto import decrypt
from instances.errors import RuntimeFailure
from instances.host.runtime import ContainerSpec, DockerRuntime
from instances.host.workspaces import workspace_path
from instances.models import Gpu, Instance
from instances.services.provision import container_spec
from tests.containers import docker, host_port, inspect, root_password, ssh_run, wait_for_status
from tests.factories import TEST_IMAGE, HostFactory, InstanceFactory, TemplateFactory
from tests.processes import wait_until
from tests.security.helpers import ALLOWED_CAPS

pytestmark = [pytest.mark.docker, pytest.mark.celery]

HOSTILE_IMAGE = "gpucloud-test/hostile-sec:latest"
# Linux capability numbers (include/uapi/linux/capability.h) of the names templates may add.
CAP_BITS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "SYS_ADMIN": 21,
    "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31,
}  # fmt: skip


def launch(user, *, gpu_type: str = "rtx-5090", template: str = "test-sshd", access=("ssh", "jupyter")) -> Instance:
    instance = services.instance_launch(
        user=user, template=template, gpu_type=gpu_type, storage_gb=20, access=list(access)
    )
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    return instance


def inside(instance: Instance, script: str, *, check: bool = True) -> str:
    """Run a shell script in the instance's container as its root."""
    return docker("exec", instance.container_name, "sh", "-c", script, check=check)


def probe_tcp(instance: Instance, targets: list[tuple[str, int]]) -> list[str]:
    """From inside `instance`, in one go: "reached" or "blocked <why>" per (address, port)."""
    script = (
        "import socket, sys\n"
        f"for address, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((address, port), timeout=2).close(); print('reached')\n"
        "    except OSError as exc:\n"
        "        print('blocked', exc)\n"
    )
    return docker("exec", instance.container_name, "python3", "-c", script).strip().splitlines()


def answers(instance: Instance) -> None:
    """The instance answers its customer from the host: SSH runs a command, HTTP takes its token."""
    assert ssh_run(instance, "echo alive", password=root_password(instance)).strip() == "alive"
    token = decrypt(instance.access_token_encrypted)
    url = f"http://127.0.0.1:{host_port(instance, 'jupyter')}/api/status?token={token}"  # JupyterLab's API
    assert urllib.request.urlopen(url, timeout=10).status == 200


def address_of(instance: Instance) -> tuple[str, str]:
    """(container IP, gateway IP) on the instance's own network."""
    network = next(iter(inspect(instance.container_name)["NetworkSettings"]["Networks"].values()))
    return network["IPAddress"], network["Gateway"]


@pytest.fixture
def sshd(db):
    return TemplateFactory()


def test_a_tenant_sees_no_docker_socket_no_host_files_and_no_other_workspace(
    celery_worker, alice, bob, tenant_host, sshd
):
    mine, theirs = launch(alice), launch(bob)
    tag = secrets.token_hex(6)
    inside(theirs, f"echo bobs-data > /workspace/bob-marker-{tag}")
    inside(mine, f"echo alices-data > /workspace/alice-marker-{tag}")
    host_marker = Path(settings.GPUCLOUD_DATA_ROOT) / f"host-marker-{tag}"
    host_marker.write_text("the host's own file")
    try:
        # No Docker socket anywhere in the container.
        sockets = inside(mine, r"find / \( -path /proc -o -path /sys \) -prune -o -name 'docker.sock' -print")
        assert sockets == ""
        assert inside(mine, "test -e /var/run/docker.sock || test -e /run/docker.sock", check=False) == ""
        # Nothing of the host beyond /workspace: not the data root, not bob's workspace,
        # found neither by path nor by searching the whole tree for the markers.
        found = inside(mine, rf"find / \( -path /proc -o -path /sys \) -prune -o -name '*-marker-{tag}' -print")
        assert found.split() == [f"/workspace/alice-marker-{tag}"]
        for path in (settings.GPUCLOUD_DATA_ROOT, workspace_path(instance=theirs), workspace_path(instance=mine)):
            assert inside(mine, f"test -e {path} && echo visible", check=False) == "", path
        # The only host filesystem mounts: its own workspace and Docker's resolv.conf/hostname/hosts.
        mounts = {}
        for line in inside(mine, "cat /proc/self/mountinfo").splitlines():
            fields = line.split()
            major = fields[2].split(":")[0]
            if major != "0":  # a block device of the host (0:N are proc, tmpfs, overlay, cgroup…)
                mounts[fields[4]] = fields[3]
        assert set(mounts) == {"/workspace", "/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}
        # Its own loop-mounted filesystem, whole (the root of it), not a host directory.
        assert mounts["/workspace"] == "/"
        # No host devices (disks, GPUs), and no way to mount anything.
        devices = inside(mine, "ls /dev").split()
        assert not [d for d in devices if d.startswith(("sd", "vd", "nvme", "nvidia", "dri", "kvm", "mem", "kmsg"))]
        assert inside(mine, "mount -t tmpfs none /mnt 2>&1; echo rc=$?", check=False).strip().endswith("rc=32")
        # Capabilities: none beyond what the template adds (CapEff of the customer's root shell).
        cap_eff = int(inside(mine, "grep CapEff /proc/self/status").split()[1], 16)
        held = {name for name, bit in CAP_BITS.items() if cap_eff & (1 << bit)}
        assert held <= ALLOWED_CAPS
        assert cap_eff & ((1 << 21) | (1 << 27) | (1 << 13)) == 0  # no SYS_ADMIN, MKNOD, NET_RAW
        # And the same over SSH, as the customer logs in.
        assert ssh_run(mine, "ls /workspace; test -e /var/run/docker.sock || echo no-socket",
                       password=root_password(mine)).split() == [f"alice-marker-{tag}", "lost+found", "no-socket"]  # fmt: skip
        # A setuid-root binary planted in the workspace (root in the container owns its
        # files on the host) is out of reach of the host's unprivileged users.
        inside(mine, "cp /usr/bin/python3 /workspace/suid-python && chmod 4755 /workspace/suid-python")
        planted = workspace_path(instance=mine) / "suid-python"
        assert planted.stat().st_mode & 0o4000
        assert planted.stat().st_uid == 0
        assert workspace_path(instance=mine).parent.stat().st_mode & 0o077 == 0
        as_nobody = subprocess.run(
            ["runuser", "-u", "nobody", "--", str(planted), "-c", "import os; print(os.geteuid())"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert as_nobody.returncode != 0
        assert "Permission denied" in as_nobody.stderr
    finally:
        host_marker.unlink()


def _host_cgroup(controller: str, container_id: str, name: str) -> str:
    # cgroup v1 with Docker's cgroupfs driver here; v2 (unified) keeps every file in one place.
    for path in (
        Path("/sys/fs/cgroup") / controller / "docker" / container_id / name,
        Path("/sys/fs/cgroup/system.slice") / f"docker-{container_id}.scope" / name,
    ):
        if path.exists():
            return path.read_text()
    raise AssertionError(f"no cgroup file {name} for {container_id}")


def test_a_fork_bomb_and_a_memory_bomb_are_contained_and_others_keep_answering(
    celery_worker, alice, bob, tenant_host, sshd
):
    bomber, victim = launch(alice), launch(bob, gpu_type="rtx-pro-6000")
    container_id = inspect(bomber.container_name)["Id"]
    answers(victim)

    # Memory bomb: touched pages until the kernel's OOM killer ends it (exit 137 = SIGKILL).
    memory_bomb = "b = []\nwhile True:\n    b.append(b'x' * (64 << 20))\n"
    done = subprocess.run(
        ["docker", "exec", bomber.container_name, "python3", "-c", memory_bomb],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 137, (done.returncode, done.stderr[-300:])
    oom = dict(line.split() for line in _host_cgroup("memory", container_id, "memory.oom_control").splitlines())
    assert int(oom.get("oom_kill", "1")) >= 1
    limit = int(_host_cgroup("memory", container_id, "memory.limit_in_bytes"))
    assert limit == bomber.gpu_type.ram_limit_mb * 1024 * 1024
    assert inspect(bomber.container_name)["State"]["Running"]  # the bomb died, not the instance
    answers(victim)

    # Fork bomb: it fills the pids limit and no further.
    docker("exec", "-d", bomber.container_name, "sh", "-c", "f() { f | f & }; f")
    pids_max = int(_host_cgroup("pids", container_id, "pids.max"))
    assert pids_max == settings.GPUCLOUD_PIDS_LIMIT
    deadline, peak = time.monotonic() + 60, 0
    while time.monotonic() < deadline and peak < pids_max:
        peak = max(peak, int(_host_cgroup("pids", container_id, "pids.current")))
        time.sleep(0.1)
    assert peak == pids_max  # the bomb reached the limit…
    # …and was refused there (the kernel's count of refused forks), while the others answer.
    refused = int(_host_cgroup("pids", container_id, "pids.events").split()[1])
    assert refused > 0
    answers(victim)
    assert int(_host_cgroup("pids", container_id, "pids.current")) <= pids_max
    docker("kill", bomber.container_name)
    print(f"\nmemory bomb: oom_kill={oom.get('oom_kill')} limit={limit >> 20} MiB; "
          f"fork bomb: peak {peak}/{pids_max} pids, {refused} forks refused")  # fmt: skip


def test_a_tenant_cannot_reach_another_tenants_container(celery_worker, alice, bob, tenant_host, sshd):
    mine, theirs = launch(alice), launch(bob)
    my_ip, my_gateway = address_of(mine)
    their_ip, their_gateway = address_of(theirs)
    assert (my_ip, my_gateway) != (their_ip, their_gateway)
    # A network per instance, each holding only its own container.
    for instance in (mine, theirs):
        network = inspect(instance.container_name)["HostConfig"]["NetworkMode"]
        assert network == instance.container_name
        members = docker("network", "inspect", network, "--format", "{{len .Containers}}").strip()
        assert members == "1"

    # Control: the probe does reach a listening port (the container's own sshd). Then
    # bob's container directly, and bob's published ports through the host's side of
    # the bridge (they are bound to the host's loopback only).
    targets = [
        (my_ip, 22),
        (their_ip, 22),
        (their_ip, 8888),
        (my_gateway, host_port(theirs, "ssh")),
        (my_gateway, host_port(theirs, "jupyter")),
        # Nor the control plane on the host: its PostgreSQL and its Redis (the Celery broker).
        (my_gateway, int(settings.DATABASES["default"].get("PORT") or 5432)),
        (my_gateway, int(urllib.parse.urlsplit(settings.REDIS_URL).port or 6379)),
    ]
    results = probe_tcp(mine, targets)
    assert results[0] == "reached"
    for target, result in zip(targets[1:], results[1:], strict=True):
        assert result.startswith("blocked"), (target, result)
    print("\n" + "\n".join(f"{a}:{p} -> {r}" for (a, p), r in zip(targets, results, strict=True)))
    # While bob reaches his own instance from the host.
    answers(theirs)
    transport = paramiko.Transport(("127.0.0.1", host_port(theirs, "ssh")))
    try:
        transport.start_client(timeout=10)
        assert transport.remote_version.startswith("SSH-2.0-OpenSSH")
    finally:
        transport.close()


@pytest.fixture(scope="module")
def hostile_image() -> str:
    """The test image with an environment asking for every GPU and preloading a library."""
    dockerfile = (
        f"FROM {TEST_IMAGE}\n"
        "ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=all LD_PRELOAD=/tmp/hostile.so\n"
        f'LABEL gpucloud.test="{settings.GPUCLOUD_HOST_NAME}"\n'
    )
    done = subprocess.run(
        ["docker", "build", "-q", "-t", HOSTILE_IMAGE, "-"], input=dockerfile, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return HOSTILE_IMAGE


def test_an_image_asking_for_every_gpu_or_a_preload_gains_nothing(
    celery_worker, alice, tenant_host, hostile_image, client
):
    TemplateFactory(slug="hostile", name="Hostile", image=hostile_image, env={"NVIDIA_VISIBLE_DEVICES": "all"})
    instance = launch(alice, template="hostile")
    attrs = inspect(instance.container_name)
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    host_config = attrs["HostConfig"]
    # Our value overrides the image's and the template's: the instance's (simulated) GPU only.
    assert env["NVIDIA_VISIBLE_DEVICES"] == str(instance.gpu.index)
    assert not host_config.get("DeviceRequests")
    assert not host_config.get("Devices")
    assert host_config["Runtime"] == "runc"
    assert host_config["Privileged"] is False
    assert host_config["CapDrop"] == ["ALL"]
    assert set(host_config["CapAdd"]) <= ALLOWED_CAPS
    assert "no-new-privileges" in host_config["SecurityOpt"]
    # Inside: the preload did not buy a device, a capability or the socket.
    assert inside(instance, "ls /dev/nvidia* 2>/dev/null; echo $NVIDIA_VISIBLE_DEVICES").split() == [
        str(instance.gpu.index)
    ]
    assert (
        inside(instance, "grep CapEff /proc/self/status").split()[1]
        == inside(instance, "grep CapBnd /proc/self/status").split()[1]
    )
    assert int(inside(instance, "grep CapEff /proc/self/status").split()[1], 16) & (1 << 21) == 0
    # A customer cannot ask for them either: the API refuses these names.
    client.force_login(alice)
    for name in ("NVIDIA_VISIBLE_DEVICES", "LD_PRELOAD", "ld_library_path"):
        response = client.post(
            "/api/gpu/instances",
            {"template": "hostile", "gpu": "rtx-pro-6000", "storage": 20, "env": {name: "all"}},
            content_type="application/json",
        )
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == "instances:invalid-env"


def test_a_real_gpu_is_requested_by_its_uuid_alone_whatever_the_image_asks(db, alice, gpu_types):
    """The real-GPU branch at the spec level (no NVIDIA runtime on this machine)."""
    template = TemplateFactory(slug="hostile-real", env={"NVIDIA_VISIBLE_DEVICES": "all", "LD_PRELOAD": "/x.so"})
    gpu = Gpu.objects.create(
        host=HostFactory(name="real-ws"),
        index=3,
        uuid="GPU-0b1e2f3a-1111-4222-8333-444455556666",
        name="NVIDIA GeForce RTX 5090",
        gpu_type=gpu_types["rtx-5090"],
        simulated=False,
    )
    instance = InstanceFactory(owner=alice, template=template, gpu_type=gpu_types["rtx-5090"], gpu=gpu, host=gpu.host)
    spec = container_spec(instance=instance, workspace="/tmp/ws")
    assert spec.gpu_uuid == gpu.uuid
    args = DockerRuntime._create_args(spec)
    requests = args["device_requests"]
    assert len(requests) == 1
    assert requests[0]["DeviceIDs"] == [gpu.uuid]
    assert requests[0]["Capabilities"] == [["gpu"]]
    assert not requests[0].get("Count")  # never "count": that would be every GPU, or the first
    assert args["environment"]["NVIDIA_VISIBLE_DEVICES"] == gpu.uuid
    assert args["privileged"] is False
    assert args["cap_drop"] == ["ALL"]
    assert isinstance(spec, ContainerSpec)


def test_a_template_row_with_a_capability_outside_the_allow_list_makes_no_container(db, alice, this_host):
    """Written around the API and the admin (straight to the row): the spec refuses it."""
    template = TemplateFactory(slug="hostile-caps", cap_add=["CHOWN", "SYS_ADMIN", "ALL"])
    gpu = this_host.gpus.get(index=0)
    instance = InstanceFactory(owner=alice, template=template, gpu_type=gpu.gpu_type, gpu=gpu, host=this_host)
    with pytest.raises(RuntimeFailure, match="ALL, SYS_ADMIN"):
        container_spec(instance=instance, workspace="/tmp/ws")


def _assert_unprivileged(attrs: dict) -> None:
    name = attrs["Name"]
    host_config = attrs["HostConfig"]
    assert host_config["Privileged"] is False, name
    assert host_config["CapDrop"] == ["ALL"], name
    assert set(host_config["CapAdd"] or []) <= ALLOWED_CAPS, (name, host_config["CapAdd"])
    assert "no-new-privileges" in (host_config["SecurityOpt"] or []), name
    assert not host_config.get("Devices"), name
    assert not host_config.get("DeviceRequests"), name  # simulated GPUs only in this suite
    assert (host_config["PidsLimit"] or 0) > 0, name
    assert host_config["Memory"] > 0, name
    assert host_config["Memory"] == host_config["MemorySwap"], name
    for mode in ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"):
        assert host_config.get(mode, "") != "host", (name, mode)
    assert host_config["NetworkMode"] == name.lstrip("/"), name
    assert not any("docker.sock" in (m.get("Source") or "") for m in attrs["Mounts"]), name
    assert [m["Destination"] for m in attrs["Mounts"]] == ["/workspace"], name
    assert all(b["HostIp"] == "127.0.0.1" for p in (host_config["PortBindings"] or {}).values() for b in p), name


def test_every_container_launched_in_this_suite_was_unprivileged(container_log, celery_worker, alice, tenant_host):
    """Every container this suite's worker created (the events listener inspected each at
    creation; test_logs and the tests above launch them). Run alone, it launches one."""
    if not container_log.created:
        TemplateFactory()
        launch(alice)
        wait_until(lambda: container_log.inspected, timeout=10, what="the container's inspection", every=0.1)
    container_log.snapshot()
    assert container_log.inspected
    assert not container_log.missed, "containers removed before they could be inspected"
    assert set(container_log.created) <= set(container_log.inspected)
    for attrs in container_log.inspected.values():
        _assert_unprivileged(attrs)
    print(f"\n{len(container_log.inspected)} container(s) inspected, none privileged")
