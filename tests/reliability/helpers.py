"""What the fault suites share besides fixtures: the suite's host and engine, subprocess
environments, and the no-leak invariants."""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings

from instances.models import Gpu, Host, Instance, PortBinding
from tests.containers import docker

LOGS = Path(settings.VAR_DIR) / "reliability"


# The suite's host has a name, and so a queue, of its own: a worker another suite left
# running on this host's queue (tests/conftest.py's session worker) never takes its tasks.
REL_HOST = f"{settings.GPUCLOUD_HOST_NAME}-rel"


REL_QUEUE = f"host.{REL_HOST}"


PRIVATE_REDIS_PORT = 6390


PRIVATE_PG_PORT = 5490


DOCKERD_SOCKET = Path(settings.VAR_DIR) / "reliability" / "dockerd.sock"


DOCKERD_URL = f"unix://{DOCKERD_SOCKET}"


# GPUCLOUD_TEST_IMAGE: a branch that changes the test image builds and tests its own tag.
TEST_IMAGE = os.environ.get("GPUCLOUD_TEST_IMAGE", "gpucloud-test/sshd:latest")


def base_env(**overrides: str) -> dict[str, str]:
    """The environment of a web or worker subprocess: the test database, this host."""
    env = dict(os.environ)
    db = settings.DATABASES["default"]
    env["DATABASE_URL"] = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    env["GPUCLOUD_HOST_NAME"] = REL_HOST
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def labelled(**labels: str) -> list[str]:
    """The suite's containers (running or not) on the shared engine carrying `labels`."""
    return containers_on(settings.GPUCLOUD_DOCKER_URL, **labels)


def containers_on(engine_url: str, **labels: str) -> list[str]:
    """Ids of this host's containers (running or not) on the engine at `engine_url`."""
    filters = ["--filter", f"label=gpucloud.host={REL_HOST}"]
    for key, value in labels.items():
        filters += ["--filter", f"label=gpucloud.{key}={value}"]
    return docker("-H", engine_url, "ps", "-aq", "--no-trunc", *filters).split()


def inspect_on(engine_url: str, container: str) -> dict:
    return json.loads(docker("-H", engine_url, "inspect", container))[0]


# -- invariants -----------------------------------------------------------------------
def assert_nothing_leaked(*, host: Host, docker_host: str | None = None) -> None:
    """No GPU held by a resting row, no port of a resting row, no GPU held twice, no
    container of this host without a row that may have one, and one per live row."""
    resting = Instance.objects.filter(host=host).exclude(status__in=Instance.GPU_HOLDING)
    assert not resting.filter(gpu__isnull=False).exists(), "a resting instance holds a GPU"
    assert not PortBinding.objects.filter(instance__in=resting).exclude(instance__status="stopped").exists()
    assert not PortBinding.objects.filter(instance__status__in=["failed", "terminated"]).exists()
    held = list(
        Instance.objects.filter(status__in=Instance.GPU_HOLDING, gpu__isnull=False).values_list("gpu_id", flat=True)
    )
    assert len(held) == len(set(held)), "a GPU is held twice"
    ports = list(PortBinding.objects.filter(host=host).values_list("host_port", flat=True))
    assert len(ports) == len(set(ports)), "a host port is bound twice"
    live = set(
        Instance.objects.filter(
            host=host, status__in=["provisioning", "running", "stopping", "starting", "terminating"]
        ).values_list("public_id", flat=True)
    )
    args = ["-H", docker_host] if docker_host else []
    found = docker(*args, "ps", "-a", "--filter", f"label=gpucloud.host={host.name}", "--format", "{{json .Labels}}")
    labels = [dict(kv.split("=", 1) for kv in json.loads(line).split(",") if "=" in kv) for line in found.split()]
    by_instance = [lbl.get("gpucloud.instance") for lbl in labels]
    assert len(by_instance) == len(set(by_instance)), f"two containers for one instance: {by_instance}"
    assert set(by_instance) <= live, f"containers without a live row: {set(by_instance) - live}"


def gpus_of(host: Host) -> list[Gpu]:
    return list(host.gpus.order_by("index"))
