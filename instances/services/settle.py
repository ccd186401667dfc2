"""Bringing an instance to rest (stopped, failed, terminated): its running segment
closed, its GPU and ports freed, the reason on its timeline. Row work only, so both the
worker (after Docker has done its part) and the request side (an instance that never
reached a host) use it.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from instances.access.exposure import exposure_sync
from instances.models import Instance
from instances.notify.models import Event
from instances.notify.services import notify
from instances.services.backoff import start_backoff_record
from instances.services.events import Kind, Source, Status, event_add, logger, release, segment_close


def instance_settle(
    *,
    instance_id: int,
    expected: tuple[str, ...],
    status: str,
    reason: str = "",
    finished_at: datetime | None = None,
    source: str = Source.WORKER,
    failed_start: bool = False,
    code: str = "",
) -> Instance:
    """Move the row from `expected` to a resting status (stopped, failed, terminated):
    close the running segment at `finished_at` (now when None), free the GPU and ports,
    record why, and withdraw its public routes. A row no longer in `expected` is
    returned unchanged.

    `failed_start`: the container ran but never became ready; the next start is
    refused for a growing delay (instances.services.backoff). `code`: the stable error
    code of a failure, kept in the `failed` event's data.
    """
    with transaction.atomic():
        locked = Instance.objects.select_for_update(of=("self",)).select_related("host", "gpu").get(pk=instance_id)
        if locked.status not in expected:
            return locked
        segment_close(instance=locked, at=finished_at, source=source, reason=reason)
        release(instance=locked)
        locked.status = status
        kinds: dict[str, str] = {
            Status.FAILED: Kind.FAILED,
            Status.STOPPED: Kind.STOPPED,
            Status.TERMINATED: Kind.TERMINATED,
        }
        kind = kinds[status]
        data: dict[str, int | str] = {}
        if status == Status.FAILED:
            locked.last_error = reason
            if code:
                data["code"] = code
            if failed_start:
                data["retry_after_seconds"] = start_backoff_record(instance=locked, now=timezone.now())
        if status == Status.TERMINATED:
            locked.terminated_at = timezone.now()
            credentials_erase(instance=locked)
        locked.save()
        event_add(instance=locked, kind=kind, source=source, message=reason, data=data)
        if status == Status.FAILED:
            notify(
                user=locked.owner, event=Event.INSTANCE_FAILED, data={"instance": locked.public_id, "reason": reason}
            )
    logger.info("instance %s %s%s", locked.public_id, status, f": {reason}" if reason else "")
    exposure_sync(instance=locked, publish=False)
    return locked


def credentials_erase(*, instance: Instance) -> None:
    """Forget what opened the instance (its password, its Jupyter/code-server token) and
    the customer's env values (API keys live there): a destroyed instance keeps no secret.
    The caller saves the row."""
    instance.password_encrypted = ""
    instance.access_token_encrypted = ""
    instance.env = {}
