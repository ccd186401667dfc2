"""What a host's outage does to its instances' rows: nobody is billed for a dead host.

At the outage (the host's last beat): a running segment ends at that beat, a stored
workspace stops being billed (`host-unreachable` ends its storage segment), and a
launch or start that was waiting for the host is failed with its GPU and ports
released (its task, delivered when the host returns, then finds nothing to do, and the
host's reconciler removes any container it left). Instances that were running keep
their status: the API and pages show them `unreachable` while their host is.

When the host is back: stored workspaces are billed again from then (`host-returned`),
and the host's reconciler bills a running container again from when it sees it
running (instances.services.reconcile). Row work only, inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

from django.db import transaction
from django.db.models import Q

from instances.access.exposure import exposure_sync
from instances.models import Host, Instance, InstanceEvent
from instances.services.events import Kind, Source, Status, event_add, release, segment_close

# A launch or start the dead host never finished: failed (nothing of it is billed).
_WAITING = (Status.PENDING, Status.PROVISIONING, Status.STARTING)
_STORAGE_MARKS = (
    Kind.STARTED,
    Kind.ENDED,
    Kind.RESIZED,
    Kind.TERMINATED,
    Kind.WORKSPACE_REMOVED,
    Kind.HOST_UNREACHABLE,
    Kind.HOST_RETURNED,
)
_STORAGE_OPEN = (Kind.ENDED, Kind.RESIZED, Kind.HOST_RETURNED)


def _affected(host: Host) -> list[Instance]:
    """The host's instances whose container or workspace lives there, locked."""
    keeps_workspace = Q(status__in=Instance.LIVE) | Q(status=Status.FAILED, workspace_removed_at__isnull=True)
    return list(Instance.objects.select_for_update(of=("self",)).filter(keeps_workspace, host=host).order_by("pk"))


def _last_mark(instance: Instance) -> InstanceEvent | None:
    return instance.events.filter(kind__in=_STORAGE_MARKS).order_by("-at", "-id").first()


def host_outage_begin(*, host: Host, last_beat_at: datetime, reason: str) -> list[str]:
    """Bill nothing of `host` from `last_beat_at`; returns the public ids touched."""
    touched, withdrawn = [], []
    for instance in _affected(host):
        segment_close(instance=instance, at=last_beat_at, source=Source.RECONCILER, reason=reason)
        if instance.status in _WAITING:
            release(instance=instance)
            instance.status, instance.last_error = Status.FAILED, reason
            event_add(instance=instance, kind=Kind.FAILED, source=Source.RECONCILER, message=reason)
            withdrawn.append(instance)
        instance.save()
        last = _last_mark(instance)
        # A second outage before the reconciler saw the first one's instance keeps it paused.
        paused = last is not None and (last.kind in _STORAGE_OPEN or _pausing(last))
        event_add(
            instance=instance,
            kind=Kind.HOST_UNREACHABLE,
            source=Source.RECONCILER,
            at=max(last_beat_at, last.at) if last is not None else last_beat_at,
            message=reason,
            data={"last_heartbeat_at": last_beat_at.isoformat(), "storage_paused": paused},
        )
        touched.append(instance.public_id)
    for failed in withdrawn:
        transaction.on_commit(partial(exposure_sync, instance=failed, publish=False))
    return touched


def host_outage_end(*, host: Host, at: datetime) -> list[str]:
    """`host` beats again at `at`: its paused stored workspaces are billed again from
    then. A row still `running` is the reconciler's (seen running: a new GPU segment;
    gone: ended, its workspace billed again). Returns the public ids resumed."""
    resumed = []
    for instance in _affected(host):
        if instance.status == Status.RUNNING:
            continue
        if outage_paused_storage(instance):
            storage_resume(instance=instance, at=at)
            resumed.append(instance.public_id)
    return resumed


def _pausing(event: InstanceEvent) -> bool:
    return event.kind == Kind.HOST_UNREACHABLE and bool(event.data.get("storage_paused"))


def outage_paused_storage(instance: Instance) -> bool:
    """Whether the instance's stored workspace is paused by an outage, not yet resumed."""
    last = _last_mark(instance)
    return last is not None and _pausing(last)


def storage_resume(*, instance: Instance, at: datetime, message: str = "") -> None:
    """Open the next storage segment of the instance's workspace at `at` (its host is back)."""
    event_add(
        instance=instance,
        kind=Kind.HOST_RETURNED,
        source=Source.RECONCILER,
        at=at,
        message=message or "the host is back: the stored workspace is billed again",
        data={"storage_gb": instance.storage_gb},
    )


def outage_leftovers_resume(*, host: Host, at: datetime) -> list[str]:
    """Bill again, from `at`, a stored workspace of `host` still paused by an outage that
    is over: the host's return skips rows still `running` (the reconciler's), and such a
    row may have been stopped or destroyed since without the reconciler seeing it.
    Level-driven (the reconciler calls it every run); nothing while the host is
    unreachable. Under the host's and the row's locks, so it never resumes a workspace
    twice, nor while another outage begins."""
    resumed: list[str] = []
    paused = (
        Instance.objects.filter(host=host, events__kind=Kind.HOST_UNREACHABLE)
        .exclude(status__in=(Status.RUNNING, Status.TERMINATED))
        .values_list("pk", flat=True)
        .distinct()
    )
    for pk in list(paused):
        with transaction.atomic():
            if (
                not Host.objects.select_for_update(no_key=True)
                .filter(pk=host.pk)
                .exclude(status=Host.Status.UNREACHABLE)
            ):
                return resumed
            locked = Instance.objects.select_for_update(of=("self",)).get(pk=pk)
            if locked.status != Status.RUNNING and outage_paused_storage(locked):
                storage_resume(instance=locked, at=at)
                resumed.append(locked.public_id)
    return resumed
