"""The fixed cast and the real processes tests share.

alice and bob are customers, olga is an operator. Tests that cross a process (a
Celery worker, a web server) use `transactional_db` so the other process sees
committed rows; they get a worker consuming this host's queue on the test database.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from gpucloud.celery import app
from instances.host import loopfs
from instances.host.inventory import host_sync
from instances.models import Host
from tests.factories import GpuTypeFactory, UserFactory
from tests.processes import stop_group, worker_env, worker_start

ROOT = Path(__file__).resolve().parent.parent

# Fixtures several suites use, kept in a plain module.
pytest_plugins = ["tests.stripe_fixtures"]


@pytest.fixture(scope="session", autouse=True)
def _no_workspace_left_mounted() -> Iterator[None]:
    """Unmount every workspace filesystem under this run's directories at the start and
    the end of the session: a test that removes containers out of band (docker rm -f)
    leaves their workspaces mounted, and each holds one of the host's few loop devices."""

    def sweep() -> None:
        for root in {Path(settings.GPUCLOUD_DATA_ROOT), Path(settings.VAR_DIR)}:
            for point in loopfs.mounts_under(root=root):
                if point.name in ("workspace", "mnt"):
                    subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False, timeout=60)

    sweep()
    yield
    sweep()


@pytest.fixture
def alice(db):
    return UserFactory(username="alice", email="alice@example.com")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob", email="bob@example.com")


@pytest.fixture
def olga(db):
    return UserFactory(username="olga", email="olga@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def gpu_types(db):
    """The seeded GPU types (a transactional test's flush removes seeded rows)."""
    return {
        "rtx-5090": GpuTypeFactory(sku="rtx-5090", display_name="RTX 5090", rate_per_hour=Decimal("1.49")),
        "rtx-pro-6000": GpuTypeFactory(sku="rtx-pro-6000", display_name="RTX PRO 6000", rate_per_hour=Decimal("2.99")),
    }


@pytest.fixture
def this_host(db, gpu_types) -> Host:
    """This machine as a Host with its two simulated GPUs, named as the worker's queue."""
    return host_sync(name=settings.GPUCLOUD_HOST_NAME, source="simulated").host


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker) -> Iterator[subprocess.Popen]:
    """A real Celery worker on this host's queue, against the test database and Redis."""
    assert settings.CELERY_BROKER_URL.startswith("redis"), "worker tests need REDIS_URL (see README)"
    queue = f"host.{settings.GPUCLOUD_HOST_NAME}"
    with app.connection_for_write() as conn:  # start from empty queues
        for name in (queue, "default"):
            conn.default_channel.queue_purge(name)
    proc = worker_start(
        queues=[queue, "default"],
        name="pytest",
        env=worker_env(settings.DATABASES["default"]["NAME"]),
        log_path=Path(settings.VAR_DIR) / "test-worker.log",
    )
    yield proc
    stop_group(proc)


@pytest.fixture
def celery_worker(celery_worker_process, transactional_db) -> subprocess.Popen:
    """A worker for one test; the test's rows are committed so the worker sees them."""
    return celery_worker_process
