"""The waitlist: a launch into a full GPU type may wait its turn (`?queue=1`).

- `launch_or_queue`: the ordinary launch; when it finds no free GPU (NoCapacity, after
  every validation and the admission checks passed) and the customer asked to wait, the
  validated request becomes a `waiting` entry instead of a 409. Nothing is held, nothing
  billed.
- `waitlist_grant`: a beat job (and a call after a cancel): per GPU type, oldest entry
  first, each is launched through `instance_launch` (admission checked again now); the
  first NoCapacity ends that type's turn. An entry refused by a check is `refused` with
  the reason and the next in line goes on. The instance's timeline says it came from the
  waitlist: that is how the customer is told it started.
- `waitlist_cancel`: only a `waiting` entry (a conditional update, so a cancel and a
  grant never both win).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from gpucloud.errors import DomainError
from instances.errors import (
    InfrastructureError,
    NoCapacity,
    QueueUnavailable,
    WaitlistEntryNotFound,
    WaitlistNotWaiting,
)
from instances.models import GpuType, Instance, InstanceEvent
from instances.services.events import event_add
from instances.services.launch import instance_launch
from instances.services.locks import lock_acquire, lock_release
from instances.waitlist_models import WaitlistEntry
from templates_app.models import Template

logger = logging.getLogger(__name__)

Status = WaitlistEntry.Status
GRANT_LOCK = "waitlist-grant"


def launch_or_queue(
    *, queue: bool, user: Any, idempotency_key: str = "", fingerprint: str = "", **launch: Any
) -> Instance | WaitlistEntry:
    """`instance_launch(**launch)`; with `queue`, NoCapacity makes (or, for the same
    idempotency key, returns) a waiting entry instead. Returns an Instance or a
    WaitlistEntry; raises what instance_launch raises otherwise."""
    try:
        return instance_launch(user=user, idempotency_key=idempotency_key, fingerprint=fingerprint, **launch)
    except NoCapacity:
        if not queue:
            raise
    if idempotency_key:  # a retry of a request that was queued: the same entry
        earlier = WaitlistEntry.objects.filter(owner=user, idempotency_key=idempotency_key).first()
        if earlier is not None:
            return earlier
    template, gpu_type = launch.pop("template"), launch.pop("gpu_type")
    launch.pop("actor", None)
    entry = WaitlistEntry(
        owner=user,
        gpu_type=gpu_type if isinstance(gpu_type, GpuType) else GpuType.objects.get(sku=gpu_type),
        template=template if isinstance(template, Template) else Template.objects.get(slug=template),
        request=launch,
        fingerprint=fingerprint,
    )
    entry.idempotency_key = idempotency_key or f"waitlist:{entry.public_id}"
    entry.save()
    return entry


def waiting(*, gpu_type_id: int | None = None) -> QuerySet[WaitlistEntry]:
    """Waiting entries in the order they are granted."""
    entries = WaitlistEntry.objects.filter(status=Status.WAITING).order_by("created_at", "id")
    return entries if gpu_type_id is None else entries.filter(gpu_type_id=gpu_type_id)


def waitlist_position(*, entry: WaitlistEntry) -> int | None:
    """1 for the next in line of its GPU type; None when it is not waiting."""
    if entry.status != Status.WAITING:
        return None
    ahead = waiting(gpu_type_id=entry.gpu_type_id).filter(
        Q(created_at__lt=entry.created_at) | Q(created_at=entry.created_at, id__lt=entry.pk)
    )
    return ahead.count() + 1


def waitlist_cancel(*, entry: WaitlistEntry) -> WaitlistEntry:
    """Cancel a waiting entry. Raises WaitlistNotWaiting once it was granted or ended."""
    done = WaitlistEntry.objects.filter(pk=entry.pk, status=Status.WAITING).update(
        status=Status.CANCELLED, ended_at=timezone.now()
    )
    entry.refresh_from_db()
    if not done:
        raise WaitlistNotWaiting(detail={"id": entry.public_id, "status": entry.status})
    return entry


def waitlist_get(*, user: Any, public_id: str) -> WaitlistEntry:
    entry = WaitlistEntry.objects.filter(owner=user, public_id=public_id).select_related("gpu_type").first()
    if entry is None:
        raise WaitlistEntryNotFound()
    return entry


def _grant(entry: WaitlistEntry) -> bool:
    """Launch one claimed entry. False when no GPU is free (the entry waits on)."""
    try:
        instance = instance_launch(
            user=entry.owner,
            template=entry.template,
            gpu_type=entry.gpu_type,
            idempotency_key=entry.idempotency_key,
            fingerprint=entry.fingerprint,
            **entry.request,
        )
    except (NoCapacity, InfrastructureError, QueueUnavailable):
        # No GPU, or a transient failure (a busy lock, the broker down: nothing was
        # started and the key is free): it keeps its place for the next run.
        WaitlistEntry.objects.filter(pk=entry.pk).update(status=Status.WAITING)
        return False
    except DomainError as exc:  # admission refused it at its turn: the next in line goes on
        WaitlistEntry.objects.filter(pk=entry.pk).update(
            status=Status.REFUSED, reason=f"{exc.code}: {exc.message}", ended_at=timezone.now()
        )
        return True
    waited = (timezone.now() - entry.created_at).total_seconds()
    with transaction.atomic():
        WaitlistEntry.objects.filter(pk=entry.pk).update(
            status=Status.GRANTED, instance=instance, ended_at=timezone.now()
        )
        if not InstanceEvent.objects.filter(instance=instance, data__waitlist=entry.public_id).exists():
            event_add(
                instance=instance,
                kind=InstanceEvent.Kind.NOTE,
                source=InstanceEvent.Source.WORKER,
                message=f"A GPU freed up: started from the waitlist ({entry.public_id}) after {waited:.0f} s.",
                data={"waitlist": entry.public_id},
            )
    return True


def waitlist_grant() -> int:
    """Grant waiting entries, oldest first per GPU type, while GPUs are free. One run at
    a time (a lock); safe to repeat. Returns how many were launched or refused."""
    held = lock_acquire(name=GRANT_LOCK)
    if held is None:
        return 0
    try:
        # Left `granting` by a run that died: their launch is keyed, so trying again
        # returns the instance it may have made instead of a second one.
        WaitlistEntry.objects.filter(status=Status.GRANTING).update(status=Status.WAITING)
        done = 0
        types = waiting().values_list("gpu_type_id", flat=True).distinct().order_by()
        for gpu_type_id in list(types):
            for entry in waiting(gpu_type_id=gpu_type_id).select_related("owner", "template", "gpu_type"):
                if not WaitlistEntry.objects.filter(pk=entry.pk, status=Status.WAITING).update(status=Status.GRANTING):
                    continue  # cancelled meanwhile
                if not _grant(entry):
                    break
                done += 1
        return done
    finally:
        lock_release(held=held)
