"""Fleet liveness: each host's worker beats (host_heartbeat), and a job that runs on any
worker, never on the host's own queue (hosts_liveness), judges the beats.

A host whose last beat is older than GPUCLOUD_HEARTBEAT_MISSED beats becomes
`unreachable`: it takes nothing (the scheduler wants `online`), availability leaves it
out, and its instances stop being billed at its last beat (instances.services.outage).
When it beats again it goes back to what it was (online or draining) and its own
reconciler is sent at once: an instance is billed again only from when it is seen
running. Every step is a conditional update on the host row, so two liveness runs
(two workers' beats of the job) never both act.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.host.heartbeat import host_facts
from instances.host.runtime import DockerRuntime
from instances.models import Host
from instances.services import queue
from instances.services.locks import lock_acquire, lock_release
from instances.services.move import moves_host_lost
from instances.services.outage import host_outage_begin, host_outage_end
from templates_app.models import Template

logger = logging.getLogger("instances.fleet")

RECONCILE = "instances.tasks.reconcile_host"
# The statuses liveness judges: an operator's `offline` host is left alone.
JUDGED = (Host.Status.ONLINE, Host.Status.DRAINING)


def liveness_bound() -> timedelta:
    """How old a host's last beat may be before it is unreachable."""
    return timedelta(seconds=settings.GPUCLOUD_HEARTBEAT_SECONDS * settings.GPUCLOUD_HEARTBEAT_MISSED)


def host_heartbeat(*, host_name: str, runtime: DockerRuntime | None = None) -> Host | None:
    """Record one beat of the host named `host_name` (this machine): its last beat and
    facts (engine, GPUs seen, CPUs, memory, free disk, the enabled templates' images it
    holds). None when no such host is registered (sync_host makes it)."""
    host = Host.objects.filter(name=host_name).first()
    if host is None:
        return None
    images = sorted(set(Template.objects.filter(enabled=True).values_list("image", flat=True)))
    facts = host_facts(host=host, images=images, runtime=runtime)
    now = timezone.now()
    with transaction.atomic():
        # Under the row lock: preflight and sync write other keys of `facts`.
        locked = Host.objects.select_for_update().get(pk=host.pk)
        locked.last_heartbeat_at = now
        locked.facts = {**locked.facts, "heartbeat": {**facts, "at": now.isoformat()}}
        # update(), not save(): nothing customers see changes, so no post_save signal
        # invalidates the API's cached lists every few seconds per host.
        Host.objects.filter(pk=host.pk).update(last_heartbeat_at=now, facts=locked.facts)
    return locked


@dataclass
class LivenessReport:
    skipped: bool = False
    unreachable: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)


def hosts_liveness(*, now: datetime | None = None) -> LivenessReport:
    """Mark hosts whose beats stopped `unreachable`, and those beating again back.

    A host that never beat (last_heartbeat_at empty) is not judged; with beats off
    (GPUCLOUD_HEARTBEAT_SECONDS 0) nothing is. Holds a lock, so
    two runs never overlap (a second is skipped); correct when a run is skipped or
    repeated."""
    report = LivenessReport()
    if settings.GPUCLOUD_HEARTBEAT_SECONDS <= 0:  # beats are off: nothing to judge
        report.skipped = True
        return report
    held = lock_acquire(name="hosts-liveness")
    if held is None:
        report.skipped = True
        return report
    try:
        now = now or timezone.now()
        silent_since = now - liveness_bound()
        for host in Host.objects.filter(status__in=JUDGED, last_heartbeat_at__lt=silent_since):
            if host_unreachable_mark(host=host, seen_at=host.last_heartbeat_at):
                report.unreachable.append(host.name)
        for host in Host.objects.filter(status=Host.Status.UNREACHABLE, last_heartbeat_at__gte=silent_since):
            if host_returned_mark(host=host):
                report.returned.append(host.name)
    finally:
        lock_release(held=held)
    if report.unreachable or report.returned:
        logger.warning("liveness: unreachable %s, back %s", report.unreachable, report.returned)
    return report


def host_unreachable_mark(*, host: Host, seen_at: Any) -> bool:
    """`host` (online or draining) is unreachable from its last beat `seen_at`: its
    instances are billed up to that beat only, its pending launches failed and released.
    False when another run got there first or the host beat meanwhile."""
    reason = f"no heartbeat since {seen_at:%Y-%m-%d %H:%M:%S} UTC"
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if locked.status not in JUDGED or locked.last_heartbeat_at != seen_at:
            return False
        locked.facts = {**locked.facts, "liveness": {"was": locked.status, "was_reason": locked.status_reason}}
        locked.status, locked.status_reason = Host.Status.UNREACHABLE, reason
        locked.save(update_fields=["status", "status_reason", "facts"])
        host_outage_begin(host=locked, last_beat_at=seen_at, reason=f"host {locked.name} unreachable: {reason}")
        moves_host_lost(host=locked, reason=f"host {locked.name} became unreachable: {reason}")
    return True


def host_returned_mark(*, host: Host) -> bool:
    """`host` beats again: back to what it was before (online, or draining), its stored
    workspaces billed again from now, and its reconciler sent (a running container is
    billed again from when it is seen). False when another run got there first."""
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if locked.status != Host.Status.UNREACHABLE:
            return False
        before = (locked.facts or {}).get("liveness") or {}
        locked.status = before.get("was") or Host.Status.ONLINE
        locked.status_reason = before.get("was_reason") or ""
        locked.save(update_fields=["status", "status_reason"])
        host_outage_end(host=locked, at=timezone.now())
        transaction.on_commit(lambda: queue.host_task_send(RECONCILE, host=locked))
    return True
