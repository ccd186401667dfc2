"""Named locks (instances.services.locks) on both backends: the database's (the quick
start, no REDIS_URL) and Redis's. Contenders are other processes or threads, each with
its own database connection, so a lock must hold outside one process's memory."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from instances.errors import InstanceBusy
from instances.services.locks import (
    instance_lock,
    instance_lock_held,
    lock_acquire,
    lock_held,
    lock_release,
)
from tests.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent

HOLDER = """
import sys
import django
django.setup()
from instances.services.locks import instance_lock
with instance_lock(instance_id=int(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture(params=["database", "redis"])
def backend(request, settings) -> str:
    """The lock's backend: the database when REDIS_URL is unset (as in the quick start,
    whose cache is then per process), else Redis."""
    if request.param == "database":
        settings.REDIS_URL = ""
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    else:
        assert settings.REDIS_URL, "the Redis case needs REDIS_URL (scripts/test sets it)"
    return request.param


def _process_env() -> dict[str, str]:
    db = settings.DATABASES["default"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", REDIS_URL=settings.REDIS_URL)
    env["DATABASE_URL"] = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    return env


def _contend(count: int, work) -> list:
    """Run `work()` in `count` threads released at once; their results."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work()
        finally:
            connection.close()  # each thread's own connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_an_instance_lock_held_by_another_process_excludes_this_one(backend, transactional_db):
    instance_id = secrets.randbelow(10**9) + 10**9
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(instance_id)],
        cwd=ROOT,
        env=_process_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"

        assert instance_lock_held(instance_id=instance_id)
        with pytest.raises(InstanceBusy), instance_lock(instance_id=instance_id):
            pass
    finally:
        holder.communicate(input="\n", timeout=30)
    assert holder.returncode == 0

    assert not instance_lock_held(instance_id=instance_id)
    with instance_lock(instance_id=instance_id):
        assert instance_lock_held(instance_id=instance_id)


def test_of_many_threads_at_once_exactly_one_takes_the_lock(backend, transactional_db):
    name = f"test:{secrets.token_hex(4)}"
    results = _contend(8, lambda: lock_acquire(name=name))

    taken = [held for held in results if held is not None]
    assert len(taken) == 1
    assert lock_release(held=taken[0])
    assert not lock_held(name=name)


def test_waiting_holders_never_overlap(backend, transactional_db):
    name, inside, most = f"test:{secrets.token_hex(4)}", [0], [0]

    def work() -> bool:
        held = lock_acquire(name=name, wait_seconds=30)
        if held is None:
            return False
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.02)  # a window for another to get in, were the lock broken
        inside[0] -= 1
        return lock_release(held=held)

    assert _contend(6, work) == [True] * 6
    assert most[0] == 1


def test_a_release_by_a_holder_whose_lock_expired_leaves_the_new_holders_lock(backend, db):
    name = f"test:{secrets.token_hex(4)}"
    first = lock_acquire(name=name, ttl_seconds=0.2)
    assert first is not None
    # The first holder stalls past its TTL: the lock is free for another once it expires.
    second = wait_until(lambda: lock_acquire(name=name), timeout=10, what="the expired lock to be taken again")

    assert not lock_release(held=first)

    assert lock_held(name=name)
    assert lock_acquire(name=name) is None
    assert lock_release(held=second)
    assert not lock_held(name=name)
