"""Named locks that hold across threads, processes and hosts: one worker task per
instance at a time, one reconciler run per host at a time, one writer of a host's
Cloudflare tunnel configuration at a time.

With REDIS_URL, redis-py's Lock (SET NX PX; released by a Lua script that deletes the
key only if it still holds the holder's token). Without it (the quick start), a row of
instances.models.Lock in the database that web, worker and beat share: claimed by an
INSERT, or by a conditional UPDATE of an expired row; released by a DELETE of the
holder's token. Either way every lock expires after its TTL, so a killed holder's lock
frees itself, and a release never frees a lock that expired and was taken by another.
Take a lock outside transaction.atomic(): the database's row must be committed to
exclude anyone else.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import LockNotOwnedError

from instances.errors import InstanceBusy, LockBusy
from instances.models import Lock

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05
_clients: dict[str, redis.Redis] = {}


@dataclass(frozen=True)
class HeldLock:
    """A lock this process holds: its name and the token that proves it."""

    name: str
    token: str


def default_ttl_seconds() -> float:
    # Outlives the hard task time limit, so a lock is never lost while its holder still
    # runs, and a killed holder's lock expires well before Redis redelivers its message.
    return settings.CELERY_TASK_TIME_LIMIT + 60


def _redis() -> redis.Redis | None:
    url = settings.REDIS_URL
    if not url:
        return None
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]


def _redis_lock(client: redis.Redis, name: str, ttl_seconds: float | None = None) -> redis.lock.Lock:
    return client.lock(f"gpucloud:lock:{name}", timeout=ttl_seconds, thread_local=False)


def _db_claim(*, name: str, token: str, ttl_seconds: float) -> bool:
    now = timezone.now()
    expires_at = now + timedelta(seconds=ttl_seconds)
    # An expired row (its holder died): of two claimants, the conditional UPDATE changes
    # it for one only (PostgreSQL re-checks the WHERE after waiting on the row).
    if Lock.objects.filter(name=name, expires_at__lte=now).update(token=token, expires_at=expires_at):
        return True
    try:
        with transaction.atomic():  # a savepoint when nested: a refused INSERT spoils nothing
            Lock.objects.create(name=name, token=token, expires_at=expires_at)
    except IntegrityError:  # the unique name: someone holds it
        return False
    return True


def lock_acquire(*, name: str, wait_seconds: float = 0.0, ttl_seconds: float | None = None) -> HeldLock | None:
    """Take the lock `name`, waiting up to `wait_seconds`; None when another holds it.

    Side effect: a Redis key or a Lock row that expires after `ttl_seconds` (default:
    CELERY_TASK_TIME_LIMIT + 60 s). Release it with lock_release.
    """
    ttl = default_ttl_seconds() if ttl_seconds is None else ttl_seconds
    token = secrets.token_hex(16)
    client = _redis()
    deadline = time.monotonic() + wait_seconds
    while True:
        if client is not None:
            taken = _redis_lock(client, name, ttl).acquire(blocking=False, token=token)
        else:
            taken = _db_claim(name=name, token=token, ttl_seconds=ttl)
        if taken:
            return HeldLock(name=name, token=token)
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def lock_release(*, held: HeldLock) -> bool:
    """Release a lock taken by lock_acquire, only if it is still this holder's.

    False (and a warning) when it had expired meanwhile: another holder's lock, taken
    since, is left alone.
    """
    client = _redis()
    if client is not None:
        try:
            _redis_lock(client, held.name).do_release(held.token)
            released = True
        except LockNotOwnedError:
            released = False
    else:
        released = bool(Lock.objects.filter(name=held.name, token=held.token).delete()[0])
    if not released:
        logger.warning("lock %s had expired before its holder released it", held.name)
    return released


def lock_held(*, name: str) -> bool:
    """Whether anyone holds the lock `name` now."""
    client = _redis()
    if client is not None:
        return _redis_lock(client, name).locked()
    return Lock.objects.filter(name=name, expires_at__gt=timezone.now()).exists()


def lock_break(*, name: str) -> None:
    """Free the lock `name` whoever holds it: for an operator (or a test) standing in
    for the expiry of a lock whose holder is known to be dead."""
    client = _redis()
    if client is not None:
        client.delete(f"gpucloud:lock:{name}")
    else:
        Lock.objects.filter(name=name).delete()


@contextlib.contextmanager
def lock_hold(
    *, name: str, wait_seconds: float = 0.0, busy: LockBusy | None = None, ttl_seconds: float | None = None
) -> Iterator[None]:
    """Hold the lock `name` for the block, waiting up to `wait_seconds` for it (expiring
    after `ttl_seconds`, default as lock_acquire's).

    Raises `busy` (default LockBusy, an InfrastructureError: retried) when another
    holds it. Released on exit, only if still this holder's.
    """
    held = lock_acquire(name=name, wait_seconds=wait_seconds, ttl_seconds=ttl_seconds)
    if held is None:
        raise busy or LockBusy(detail={"lock": name})
    try:
        yield
    finally:
        lock_release(held=held)


def instance_lock_name(*, instance_id: int) -> str:
    return f"instance:{instance_id}"


@contextlib.contextmanager
def instance_lock(*, instance_id: int, ttl_seconds: float | None = None) -> Iterator[None]:
    """Serialise the worker-side work on one instance across threads and processes
    (`ttl_seconds`: for a task allowed longer than CELERY_TASK_TIME_LIMIT).

    Raises InstanceBusy (retried like any infrastructure error) when held.
    """
    busy = InstanceBusy(detail={"instance_id": instance_id})
    with lock_hold(name=instance_lock_name(instance_id=instance_id), busy=busy, ttl_seconds=ttl_seconds):
        yield


def instance_lock_held(*, instance_id: int) -> bool:
    """Whether a task is working on the instance now (the reconciler leaves it alone)."""
    return lock_held(name=instance_lock_name(instance_id=instance_id))
