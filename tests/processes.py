"""Real processes the tests start: Celery workers, localstripe; free loopback ports, and
waiting for a condition with a deadline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from tests import objectstore

ROOT = Path(__file__).resolve().parent.parent

_LOCALSTRIPE = (
    "import sys\n"
    "from aiohttp import web\n"
    "from localstripe import resources, server\n"
    # Start from scratch and never share /tmp/localstripe.pickle with other sessions.
    "resources.store.dump_to_disk = lambda: None\n"
    "web.run_app(server.app, host='127.0.0.1', port=int(sys.argv[1]), print=None)\n"
)


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; its value. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(proc: subprocess.Popen, ready, *, what: str, log_path: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc)
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"{what} did not start:\n{tail}")
        time.sleep(0.1)


def stop_group(proc: subprocess.Popen, *, timeout: float = 20) -> None:
    """SIGTERM the process group, SIGKILL what is left after `timeout`."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def worker_start(
    *, queues: list[str], name: str, env: dict[str, str], log_path: Path, concurrency: int = 4
) -> subprocess.Popen:
    """A Celery worker (threads pool) on `queues`, returned once it says it is ready."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "celery", "-A", "gpucloud", "worker", "-Q", ",".join(queues)]
    argv += ["-c", str(concurrency), "-P", "threads", "--without-gossip", "--without-mingle", "-l", "INFO"]
    argv += ["-n", f"{name}-{os.getpid()}@%h"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _wait(
        proc,
        lambda: "ready." in log_path.read_text(errors="replace"),
        what="celery worker",
        log_path=log_path,
        timeout=60,
    )
    return proc


def localstripe_start(*, log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    """localstripe bound to 127.0.0.1 in a subprocess; returns it and its base URL."""
    port = free_port()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path or os.devnull, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOCALSTRIPE, str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    _wait(proc, answers, what="localstripe", log_path=log_path, timeout=30)
    return proc, f"http://127.0.0.1:{port}"


def worker_mail_dir(db_name: str) -> Path:
    """Where a test worker on `db_name` writes the emails it sends."""
    return Path(settings.VAR_DIR) / f"worker-mail-{db_name}"


def worker_env(db_name: str) -> dict[str, str]:
    env = dict(os.environ)
    url = settings.DATABASES["default"]
    if url["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{url['USER'] or 'postgres'}@{url['HOST'] or '127.0.0.1'}:{url['PORT'] or 5432}/{db_name}"
        )
    env["GPUCLOUD_HOST_NAME"] = settings.GPUCLOUD_HOST_NAME
    # The worker's mail as files (tests read them: tests/mail.py); the test process has mail.outbox.
    env["EMAIL_BACKEND"] = "django.core.mail.backends.filebased.EmailBackend"
    env["EMAIL_FILE_PATH"] = str(worker_mail_dir(db_name))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(objectstore.store_env())  # where the S3 snapshot tests' store answers
    return env
