"""Backing off repeated failed starts.

A start whose container ran but never became ready used the GPU for the whole wait.
Each such failure is charged (the GPU segment opens when the container starts), and
the next start of the instance is refused for a delay that doubles per failure, so a
workspace that keeps its services from answering cannot hold a GPU in a loop of
starts. A start that reaches `running` resets the count.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings

from instances.errors import StartBackoff
from instances.models import Instance


def start_backoff_seconds(*, failed_starts: int) -> int:
    """The delay after the `failed_starts`-th failure in a row: base, 2 x base, 4 x base,
    ... up to the cap; 0 for none."""
    if failed_starts <= 0:
        return 0
    base, cap = settings.GPUCLOUD_START_BACKOFF_SECONDS, settings.GPUCLOUD_START_BACKOFF_MAX_SECONDS
    # min() before the shift's result grows: a long run of failures stays at the cap.
    return min(cap, base * 2 ** min(failed_starts - 1, 32))


def start_backoff_record(*, instance: Instance, now: datetime) -> int:
    """Count one more failed start on `instance` (in memory; the caller saves it under
    the row lock) and set when the next start may come; returns that delay in seconds."""
    instance.failed_starts += 1
    delay = start_backoff_seconds(failed_starts=instance.failed_starts)
    instance.start_not_before = now + timedelta(seconds=delay)
    return delay


def start_backoff_clear(*, instance: Instance) -> None:
    """A start succeeded: the next failure starts again from the base delay (in memory)."""
    instance.failed_starts, instance.start_not_before = 0, None


def start_backoff_check(*, instance: Instance, now: datetime) -> None:
    """Raise StartBackoff (429, detail `retry_after_seconds`) while `instance` may not
    start yet."""
    if instance.start_not_before is None or instance.start_not_before <= now:
        return
    wait = math.ceil((instance.start_not_before - now).total_seconds())
    raise StartBackoff(
        f"The last start of this instance failed (its services never answered); try again in {wait} s.",
        detail={"retry_after_seconds": wait, "failed_starts": instance.failed_starts},
    )
