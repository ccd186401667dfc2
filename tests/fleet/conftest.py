"""Two hosts on this machine, each with its own worker and its own Docker engine.

Host `<name>-a` runs on the machine's shared engine; host `<name>-b` on a second dockerd
of this suite's own (tests.daemons.Dockerd), whose names (bridge gcfleet0, data root
/var/lib/gpucloud-fleet-docker, socket under var/, address pool 10.233.0.0/16) are not
the fault suite's, so the two suites' engines never meet. Each host has its own data
root and port range (inside this run's range) and beats every second; a host is
unreachable after three missed beats (settings of this suite only).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from gpucloud.celery import app
from instances.host.inventory import host_sync
from instances.models import Host
from tests import daemons
from tests.containers import docker
from tests.factories import TemplateFactory

LOGS = Path(settings.VAR_DIR) / "fleet"
HOST_A = f"{settings.GPUCLOUD_HOST_NAME}-a"
HOST_B = f"{settings.GPUCLOUD_HOST_NAME}-b"
ENGINE_B = daemons.EngineLayout(
    name="fleet", socket=LOGS / "dockerd.sock", bridge=("gcfleet0", "10.232.0.1/24"), address_pool="10.233.0.0/16"
)
TEST_IMAGE = os.environ.get("GPUCLOUD_TEST_IMAGE", "gpucloud-test/sshd:latest")
HEARTBEAT_SECONDS, HEARTBEAT_MISSED = 1, 3
# One local snapshot store both hosts' workers share (a move's workspace passes through it).
SNAPSHOTS = Path(settings.GPUCLOUD_DATA_ROOT) / "fleet" / "snapshots"


def _ports(which: int) -> tuple[int, int]:
    """Two disjoint halves of this run's port range."""
    low, high = settings.GPUCLOUD_PORT_RANGE
    middle = (low + high) // 2
    return (low, middle) if which == 0 else (middle + 1, high)


def engine_url(name: str) -> str:
    return settings.GPUCLOUD_DOCKER_URL if name == HOST_A else ENGINE_B.url


def host_env(name: str) -> dict[str, str]:
    """The environment of host `name`'s worker: its name, engine, data root and ports."""
    low, high = _ports(0 if name == HOST_A else 1)
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        GPUCLOUD_HOST_NAME=name,
        GPUCLOUD_DOCKER_URL=engine_url(name),
        GPUCLOUD_DATA_ROOT=str(Path(settings.GPUCLOUD_DATA_ROOT) / "fleet" / name),
        GPUCLOUD_PORT_RANGE_START=str(low),
        GPUCLOUD_PORT_RANGE_END=str(high),
        GPUCLOUD_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
        GPUCLOUD_HEARTBEAT_MISSED=str(HEARTBEAT_MISSED),
        GPUCLOUD_SNAPSHOT_STORE="local",
        GPUCLOUD_SNAPSHOT_DIR=str(SNAPSHOTS),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(autouse=True)
def _fleet_settings(settings) -> None:
    settings.GPUCLOUD_HEARTBEAT_SECONDS = HEARTBEAT_SECONDS
    settings.GPUCLOUD_HEARTBEAT_MISSED = HEARTBEAT_MISSED
    settings.GPUCLOUD_SNAPSHOT_STORE, settings.GPUCLOUD_SNAPSHOT_DIR = "local", SNAPSHOTS


@pytest.fixture
def two_hosts(gpu_types) -> tuple[Host, Host]:
    """Hosts a and b with two simulated GPUs each (RTX 5090, RTX PRO 6000)."""
    hosts = []
    for i, name in enumerate((HOST_A, HOST_B)):
        host = host_sync(name=name, source="simulated").host
        low, high = _ports(i)
        Host.objects.filter(pk=host.pk).update(docker_url=engine_url(name), port_range_start=low, port_range_end=high)
        host.refresh_from_db()
        hosts.append(host)
    return hosts[0], hosts[1]


@pytest.fixture
def fleet_template(db):
    return TemplateFactory()


def _purge() -> None:
    with app.connection_for_write() as conn:
        # "default" too: a move's snapshot, deleted by a worker, sends its purge there,
        # which no worker of this suite consumes (its row is gone after the test).
        for queue in (f"host.{HOST_A}", f"host.{HOST_B}", "default"):
            conn.default_channel.queue_purge(queue)


@pytest.fixture(scope="session")
def _engine_b_session() -> Iterator[daemons.Dockerd]:
    engine = daemons.Dockerd(layout=ENGINE_B, live_restore=True, logs=LOGS)
    engine.start()
    try:
        engine.load_image(TEST_IMAGE)
        yield engine
    finally:
        engine.empty()
        engine.stop()


def _remove_host_a_things() -> None:
    label = f"label=gpucloud.host={HOST_A}"
    if ids := docker("ps", "-aq", "--filter", label).split():
        docker("rm", "-f", *ids, check=False)
    if networks := docker("network", "ls", "-q", "--filter", label).split():
        docker("network", "rm", *networks, check=False)


@pytest.fixture
def fleet(_engine_b_session, two_hosts, transactional_db) -> Iterator[Callable[[str], daemons.Worker]]:
    """`fleet(name)` starts host `name`'s worker (again); every worker is killed, every
    container of the two hosts removed and their queues emptied at the end."""
    _purge()
    started: list[daemons.Worker] = []

    def start(name: str) -> daemons.Worker:
        worker = daemons.Worker(name, queue=f"host.{name}", env=host_env(name), logs=LOGS, prefix="fleet")
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
    _remove_host_a_things()
    _engine_b_session.empty()
    _purge()
