"""Real processes the fault suites start, break and start again.

- `Worker`: a Celery worker subprocess on this host's queue (SIGKILL it, start it again);
- `Gunicorn`: the WSGI app under gunicorn with threads, reached over real HTTP;
- `private_redis`: a redis-server of our own on 127.0.0.1:6390, stopped and started by
  the Redis test (the machine's shared Redis is never touched);
- `private_postgres`: a PostgreSQL cluster of our own (initdb + pg_ctl on port 5490),
  restarted by the PostgreSQL test (the machine's shared cluster is never touched);
- `private_dockerd`: a Docker engine of our own on a socket under var/ (its own data
  root, exec root, default bridge and address pool; no iptables), restarted by the
  dockerd test: the shared engine and everyone's containers on it are never touched.

Each writes its log under GPUCLOUD_VAR_DIR/reliability/ and is stopped at the end even
when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from gpucloud.celery import app
from instances.host.inventory import host_sync
from instances.models import Host
from tests import daemons
from tests.containers import docker
from tests.processes import free_port, wait_until
from tests.reliability.helpers import (
    DOCKERD_SOCKET,
    DOCKERD_URL,
    LOGS,
    PRIVATE_PG_PORT,
    PRIVATE_REDIS_PORT,
    REL_HOST,
    REL_QUEUE,
    TEST_IMAGE,
    base_env,
    containers_on,
)


class Process(daemons.Process):
    """A subprocess whose log goes under the suite's LOGS."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(name, argv, env, logs=LOGS)


class Worker(daemons.Worker):
    """A Celery worker consuming the suite's host queue (threads pool)."""

    def __init__(self, name: str = "worker", *, concurrency: int = 4, **env: str) -> None:
        super().__init__(name, queue=REL_QUEUE, env=base_env(**env), logs=LOGS, concurrency=concurrency)


class Gunicorn(Process):
    """The WSGI app under gunicorn on a free loopback port."""

    def __init__(self, name: str = "gunicorn", *, workers: int = 2, threads: int = 8, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "gunicorn", "gpucloud.wsgi", "-b", f"127.0.0.1:{self.port}"]
        argv += ["-w", str(workers), "--threads", str(threads), "--timeout", "120", "--graceful-timeout", "5"]
        super().__init__(name, argv, base_env(**env))

    def start(self) -> None:
        super().start()

        def answers() -> bool:
            if not self.alive():
                raise RuntimeError(f"gunicorn exited:\n{self.log()[-3000:]}")
            try:
                return requests.get(f"{self.url}/api/gpu/availability", timeout=2).status_code > 0
            except requests.RequestException:
                return False

        wait_until(answers, timeout=60, what="gunicorn to answer")


def purge_queues(broker_url: str | None = None) -> None:
    """Empty the suite's queue on `broker_url` (the test broker by default)."""
    with app.connection_for_write(broker_url) as conn:
        conn.default_channel.queue_purge(REL_QUEUE)


def _starter(kind: type[Process], default_name: str) -> Iterator[Callable[..., Any]]:
    """Start processes of `kind` for one test; every one is SIGKILLed at its end."""
    started: list[Process] = []

    def start(name: str = default_name, **kwargs: Any) -> Process:
        process = kind(name, **kwargs)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """`start_worker(name, **env)`: a Celery worker with `env` over the test's own."""
    yield from _starter(Worker, "worker")


@pytest.fixture
def start_gunicorn() -> Iterator[Callable[..., Gunicorn]]:
    """`start_gunicorn(name, workers=, threads=, **env)`: the app under gunicorn."""
    yield from _starter(Gunicorn, "gunicorn")


@pytest.fixture(autouse=True)
def _clean_host(transactional_db) -> Iterator[None]:
    """Every test starts and ends with no container, network or queued task of this host."""
    _remove_everything_of_the_suite()
    purge_queues()
    yield
    _remove_everything_of_the_suite()
    purge_queues()


def _remove_everything_of_the_suite() -> None:
    ids = containers_on(settings.GPUCLOUD_DOCKER_URL)
    if ids:
        docker("rm", "-f", *ids, check=False)
    networks = docker("network", "ls", "-q", "--filter", f"label=gpucloud.host={REL_HOST}").split()
    if networks:
        docker("network", "rm", *networks, check=False)


@pytest.fixture
def rel_host(gpu_types) -> Host:
    """The suite's host with the two simulated GPUs (RTX 5090 index 0, RTX PRO 6000 index 1)."""
    return host_sync(name=REL_HOST, source="simulated").host


# -- Redis ----------------------------------------------------------------------------
class RedisServer(Process):
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        super().__init__(f"redis-{port}", argv, dict(os.environ))

    def ping(self) -> bool:
        done = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False)
        return done.stdout.strip() == "PONG"

    def start(self) -> None:
        super().start()
        wait_until(self.ping, timeout=20, what=f"redis on {self.port}")


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own on 127.0.0.1:6390, stopped at the end."""
    server = RedisServer(PRIVATE_REDIS_PORT)
    if server.ping():
        raise RuntimeError(f"something already listens on {PRIVATE_REDIS_PORT}")
    server.start()
    yield server
    server.stop()


# -- PostgreSQL -----------------------------------------------------------------------
def _as_postgres(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    cmd = [str(bindir / argv[0]), *argv[1:]]
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)


class PostgresCluster:
    """A cluster of our own: initdb + pg_ctl in a temporary directory, on port 5490."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(f"/tmp/gpucloud-faults-pg-{port}")
        self.data = self.dir / "data"
        self.log_path = LOGS / f"postgres-{port}.log"
        self.db_name = "gpucloud_faults_private"
        self.url = f"postgres://postgres@127.0.0.1:{port}/{self.db_name}"

    def init(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.log_path, "postgres", "postgres")
        _as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "-m", "fast", action
        )

    def ready(self) -> bool:
        return (
            subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False).returncode == 0
        )

    def load_schema_from(self, db: dict[str, Any]) -> None:
        """Copy the migrated test database's schema and migration history (seconds, where
        `migrate` with dj-stripe's migrations takes about a minute)."""
        subprocess.run(
            ["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.db_name], check=True
        )
        source = ["-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432), "-U", db["USER"] or "postgres"]
        dump = subprocess.run(
            ["pg_dump", *source, "--no-owner", "--schema-only", db["NAME"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        history = subprocess.run(
            ["pg_dump", *source, "--no-owner", "--data-only", "-t", "django_migrations", "-t", "django_content_type",
             "-t", "auth_permission", db["NAME"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
        for sql in (dump, history):
            subprocess.run(
                ["psql", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", self.db_name,
                 "-v", "ON_ERROR_STOP=1"],
                input=sql,
                text=True,
                capture_output=True,
                check=True,
            )  # fmt: skip


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this test's own, with the test database's schema."""
    cluster = PostgresCluster(PRIVATE_PG_PORT)
    if cluster.ready():
        raise RuntimeError(f"something already listens on {PRIVATE_PG_PORT}")
    cluster.init()
    cluster.ctl("start")
    try:
        cluster.load_schema_from(settings.DATABASES["default"])
        yield cluster
    finally:
        _as_postgres("pg_ctl", "-D", str(cluster.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(cluster.dir, ignore_errors=True)


# -- dockerd --------------------------------------------------------------------------
# The engine's names are the suite's own (tests.daemons.Dockerd says why each matters).
ENGINE = daemons.EngineLayout(
    name="faults", socket=DOCKERD_SOCKET, bridge=("gcfaults0", "10.230.0.1/24"), address_pool="10.231.0.0/16"
)


class Dockerd(daemons.Dockerd):
    def __init__(self, *, live_restore: bool, **_: object) -> None:
        super().__init__(layout=ENGINE, live_restore=live_restore, logs=LOGS)


@pytest.fixture(scope="session")
def _private_dockerd_session() -> Iterator[Dockerd]:
    engine = Dockerd(live_restore=True)
    engine.start()
    try:
        engine.load_image(TEST_IMAGE)
        yield engine
    finally:
        if not engine.alive():
            engine.__init__(live_restore=True)  # type: ignore[misc]
            with contextlib.suppress(Exception):
                engine.start()
        _empty(engine)
        engine.stop()


def _empty(engine: Dockerd) -> None:
    engine.empty()


@pytest.fixture
def private_dockerd(_private_dockerd_session, rel_host) -> Iterator[Dockerd]:
    """A Docker engine of the test session's own, with the test image loaded, which
    this host's rows now point at. Whatever a test did to it, it answers again at the
    end (`finally`: started again if stopped), emptied of containers and networks."""
    engine = _private_dockerd_session
    Host.objects.filter(pk=rel_host.pk).update(docker_url=DOCKERD_URL)
    rel_host.refresh_from_db()
    try:
        yield engine
    finally:
        if not engine.alive() or not engine.live_restore:
            engine.stop()
            engine.__init__(live_restore=True)  # type: ignore[misc]
            engine.start()
        _empty(engine)
