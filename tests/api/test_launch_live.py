"""A launch through the API on the real worker, Docker and the test image, end to end."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from http import HTTPStatus

import paramiko
import pytest
from django.conf import settings

from instances.models import GpuType
from tests.api.helpers import token_client
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.docker, pytest.mark.celery]


def _containers(**labels: str) -> list[str]:
    filters = ["--filter", f"label=gpucloud.host={settings.GPUCLOUD_HOST_NAME}"]
    for key, value in labels.items():
        filters += ["--filter", f"label=gpucloud.{key}={value}"]
    out = subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.split()


@pytest.fixture(autouse=True)
def _no_containers_left() -> Iterator[None]:
    yield
    ids = _containers()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False, timeout=120)


def _poll(client, path: str, statuses: set[str], seconds: float = 90) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        body = client.get(path).json()
        if body["status"] in statuses or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def test_launch_wait_ssh_stop_start_destroy(celery_worker, alice, this_host):
    TemplateFactory()
    # The seeded type asks for 8 CPUs; this machine may have fewer.
    GpuType.objects.filter(sku="rtx-5090").update(cpu_limit=1, ram_limit_mb=1024)
    api = token_client(alice)
    launch = {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh", "jupyter"]}
    response = api.post("/api/gpu/instances?wait=90", launch, format="json")
    assert response.status_code == HTTPStatus.ACCEPTED, response.content
    body = response.json()
    assert body["status"] == "running", body
    assert body["started_at"]
    path = response["Location"]

    # The ssh command the API shows, with the owner's password, really logs in.
    port = int(re.fullmatch(r"ssh root@127\.0\.0\.1 -p (\d+)", body["access"]["ssh"]).group(1))
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 (a fresh test container)
    ssh.connect("127.0.0.1", port=port, username="root", password=body["access"]["password"], timeout=20)
    _, out, _ = ssh.exec_command("echo hello-from-$(hostname)")
    assert out.read().decode().startswith("hello-from-")
    ssh.close()
    assert _containers(instance=body["id"])

    logs = api.get(f"{path}/logs?lines=50")
    assert logs.status_code == HTTPStatus.OK
    assert isinstance(logs.json()["logs"], str)

    assert api.post(f"{path}/stop").status_code == HTTPStatus.ACCEPTED
    assert _poll(api, path, {"stopped", "failed"})["status"] == "stopped"
    assert api.post(f"{path}/stop").status_code == HTTPStatus.CONFLICT

    assert api.post(f"{path}/start").status_code == HTTPStatus.ACCEPTED
    assert _poll(api, path, {"running", "failed"})["status"] == "running"

    assert api.delete(path).status_code == HTTPStatus.ACCEPTED
    assert _poll(api, path, {"terminated", "failed"})["status"] == "terminated"
    assert _containers(instance=body["id"]) == []
    kinds = [e["kind"] for e in api.get(f"{path}/events?limit=100").json()["results"]]
    assert kinds[0] == "created"
    assert "started" in kinds
    assert kinds[-1] == "terminated"
