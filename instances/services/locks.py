"""Locks that hold across threads and processes: one worker task per instance at a
time, one reconciler run per host at a time."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from django.conf import settings
from django.core.cache import cache

from instances.errors import InstanceBusy


@contextlib.contextmanager
def instance_lock(*, instance_id: int) -> Iterator[None]:
    """Serialise the worker-side work on one instance across threads and processes.

    The timeout outlives the hard task time limit, so a lock is never lost while its
    holder still runs, and a killed holder's lock expires before Redis redelivers.
    Raises InstanceBusy (retried like any infrastructure error) when held.
    """
    key = _lock_key(instance_id)
    token = secrets.token_hex(8)
    if not cache.add(key, token, timeout=settings.CELERY_TASK_TIME_LIMIT + 60):
        raise InstanceBusy(detail={"instance_id": instance_id})
    try:
        yield
    finally:
        if cache.get(key) == token:
            cache.delete(key)


def _lock_key(instance_id: int) -> str:
    return f"gpucloud:instance-lock:{instance_id}"


def instance_lock_held(*, instance_id: int) -> bool:
    return cache.get(_lock_key(instance_id)) is not None
