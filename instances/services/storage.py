"""Growing a stopped instance's storage.

The row's storage_gb is the truth: billing follows it from the `resized` event on (a
storage segment ends there and the next one opens at the new size), and the host's
worker grows the workspace's filesystem before it next mounts it (workspace_ensure), so
no Docker or filesystem work happens here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from instances.errors import InvalidTransition, StorageShrink
from instances.models import Instance, WorkspaceUsage
from instances.services.events import Kind, Source, Status, event_add
from instances.services.launch import check_storage


def instance_resize(
    *, instance: Instance, storage_gb: int, actor: Any = None, source: str = Source.USER, now: datetime | None = None
) -> Instance:
    """Grow the stopped instance's /workspace to `storage_gb` GB from `now`.

    Raises InvalidStorage (outside the bounds), StorageShrink (below its size: a
    workspace never shrinks, so never below what it holds), InvalidTransition (not
    stopped). The same size again changes nothing.
    """
    check_storage(storage_gb)
    with transaction.atomic():
        locked = Instance.objects.select_for_update(of=("self",)).get(pk=instance.pk)
        if locked.status != Status.STOPPED:
            raise InvalidTransition(
                f"Cannot resize an instance that is {locked.status}: stop it first.",
                detail={"status": locked.status, "action": "resize"},
            )
        if storage_gb < locked.storage_gb:
            used = WorkspaceUsage.objects.filter(instance=locked).values_list("used_bytes", flat=True).first()
            raise StorageShrink(
                f"Storage can only be grown: this workspace is {locked.storage_gb} GB.",
                detail={"storage": locked.storage_gb, "used_bytes": used},
            )
        if storage_gb == locked.storage_gb:
            return locked
        previous, locked.storage_gb = locked.storage_gb, storage_gb
        locked.save(update_fields=["storage_gb", "updated_at"])
        event_add(
            instance=locked,
            kind=Kind.RESIZED,
            source=source,
            actor=actor,
            at=now or timezone.now(),
            message=f"Storage grown from {previous} GB to {storage_gb} GB.",
            data={"storage_gb": storage_gb, "previous_gb": previous},
        )
    return locked
