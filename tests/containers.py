"""Docker and SSH helpers the suites share: the docker CLI, inspecting, waiting for a status,
reaching an instance over SSH."""

from __future__ import annotations

import json
import subprocess
import time

import paramiko
from django.conf import settings

from instances.access.crypto import decrypt
from instances.models import Instance


def docker(*args: str, check: bool = True) -> str:
    """The docker CLI, for what the tests check or break out of band."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr}")
    return done.stdout


def labelled_containers(**labels: str) -> list[str]:
    """Ids of every container (running or not) carrying this host's label and `labels`."""
    filters = ["--filter", f"label=gpucloud.host={settings.GPUCLOUD_HOST_NAME}"]
    for key, value in labels.items():
        filters += ["--filter", f"label=gpucloud.{key}={value}"]
    return docker("ps", "-aq", "--no-trunc", *filters).split()


def labelled_containers_remove() -> None:
    """Remove every container of this host's label (a test's leftovers)."""
    if ids := labelled_containers():
        docker("rm", "-f", *ids, check=False)


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container))[0]


def wait_for_status(instance: Instance, *statuses: str, timeout: float = 90) -> Instance:
    """Poll the row until it reaches one of `statuses` (the worker moves it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instance.refresh_from_db()
        if instance.status in statuses:
            return instance
        time.sleep(0.2)
    raise AssertionError(f"{instance.public_id} stayed {instance.status} (wanted {statuses}): {instance.last_error}")


def host_port(instance: Instance, name: str) -> int:
    return instance.ports.get(name=name).host_port


def ssh_run(instance: Instance, command: str, *, password: str | None = None, pkey=None) -> str:
    """Run `command` over SSH as root on the instance's published port; its stdout."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - a fresh test container
    try:
        client.connect(
            instance.host.bind_address,
            port=host_port(instance, "ssh"),
            username="root",
            password=password if pkey is None else None,
            pkey=pkey,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
        )
        _, stdout, stderr = client.exec_command(command, timeout=20)
        out = stdout.read().decode()
        if stdout.channel.recv_exit_status() != 0:
            raise AssertionError(f"{command!r} failed: {stderr.read().decode()}")
        return out
    finally:
        client.close()


def root_password(instance: Instance) -> str:
    return decrypt(instance.password_encrypted)


def inside(instance: Instance, command: str) -> subprocess.CompletedProcess:
    """`sh -c command` in the instance's container (docker exec), its output as text."""
    return subprocess.run(
        ["docker", "exec", instance.container_name, "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
