"""Fixtures of the security suite: hostile tenants on real Docker, the web and API.

Every container this suite's worker creates carries `gpucloud.host=<this test host>`.
A session-long `docker events` listener inspects each one the moment it is created
(so even a container that lives a few milliseconds is seen), and the last test of
test_tenants.py asserts on every one of them: no privilege, only allowed capabilities.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from instances.host.inventory import host_sync
from instances.models import Host
from tests.containers import docker
from tests.processes import localstripe_start, stop_group
from tests.security.helpers import OWNER_LABEL, TENANT_GPUS, host_label


class ContainerLog:
    """Every container the control plane created on this host, inspected as it was created."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.inspected: dict[str, dict] = {}
        self.missed: list[str] = []
        self._proc = subprocess.Popen(
            ["docker", "events", "--filter", "type=container", "--filter", "event=create", "--filter", host_label(), "--filter", OWNER_LABEL,
             "--format", "{{.ID}}"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            container = line.strip()
            if not container:
                continue
            self.created.append(container)
            done = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=False)
            if done.returncode == 0:
                self.inspected[container] = json.loads(done.stdout)[0]
            else:
                self.missed.append(container)

    def snapshot(self) -> None:
        """Inspect what is there now too (a test's end, before its containers go)."""
        for container in docker("ps", "-aq", "--no-trunc", "--filter", host_label(), "--filter", OWNER_LABEL).split():
            found = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=False)
            if found.returncode == 0 and container not in self.inspected:
                self.inspected[container] = json.loads(found.stdout)[0]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


@pytest.fixture(scope="session")
def container_log() -> Iterator[ContainerLog]:
    log = ContainerLog()
    yield log
    log.close()


def _remove_everything_of_this_host() -> None:
    ids = docker("ps", "-aq", "--no-trunc", "--filter", host_label()).split()
    if ids:
        docker("rm", "-f", *ids, check=False)
    networks = docker("network", "ls", "-q", "--filter", host_label()).split()
    if networks:
        docker("network", "rm", *networks, check=False)


@pytest.fixture(autouse=True)
def _containers_recorded_then_removed(container_log) -> Iterator[None]:
    yield
    container_log.snapshot()
    _remove_everything_of_this_host()


def _clear_rate_limits() -> None:
    # Only throttle and allauth rate-limit counters: the same Redis database is the broker.
    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in ("*throttle*", "*allauth:rl:*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    _clear_rate_limits()
    yield
    _clear_rate_limits()


@pytest.fixture
def tenant_host(db, gpu_types) -> Host:
    """This machine as a Host with four simulated GPUs, named as the worker's queue."""
    return host_sync(name=settings.GPUCLOUD_HOST_NAME, source="simulated", declared=TENANT_GPUS).host


@pytest.fixture(scope="session")
def security_localstripe() -> Iterator[str]:
    """A localstripe of this suite's own. It leaves STRIPE_API_HOST alone (tests point the
    SDK at it through pytest-django's `settings`, undone after each test), so the billing
    suite's session-long localstripe, which sets that setting itself, never sees it."""
    proc, url = localstripe_start()
    yield url
    stop_group(proc, timeout=10)
