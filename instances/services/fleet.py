"""Operators' hands on the fleet: drain a host (no new instances; what runs there is
told and keeps running until stopped) and return it to service. Cordoning one GPU is
its `enabled` flag (the scheduler and availability take only enabled GPUs)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from instances.models import Gpu, Host, Instance
from instances.services.events import Kind, Source, event_add

DRAIN_NOTE = (
    "The host of this instance is being drained for maintenance: it keeps running, but once "
    "stopped it starts again only when the host is back in service."
)


def host_drain(*, host: Host, actor: Any = None, reason: str = "") -> list[str]:
    """Take `host` out of scheduling (online → draining; an unreachable host is draining
    when it comes back) and tell each instance there on its timeline. Returns the
    public ids told; [] when it was draining or offline already."""
    why = reason or f"drained by {getattr(actor, 'username', None) or 'an operator'}"
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if locked.status == Host.Status.ONLINE:
            locked.status, locked.status_reason = Host.Status.DRAINING, why
        elif locked.status == Host.Status.UNREACHABLE:
            locked.facts = {**locked.facts, "liveness": {"was": Host.Status.DRAINING, "was_reason": why}}
        else:
            return []
        locked.save(update_fields=["status", "status_reason", "facts"])
        told = []
        for instance in Instance.objects.filter(host=locked, status__in=Instance.LIVE):
            event_add(instance=instance, kind=Kind.NOTE, source=Source.OPERATOR, actor=actor, message=DRAIN_NOTE)
            told.append(instance.public_id)
    return told


def host_undrain(*, host: Host) -> bool:
    """Return a draining host to service (draining → online). False otherwise."""
    return bool(
        Host.objects.filter(pk=host.pk, status=Host.Status.DRAINING).update(status=Host.Status.ONLINE, status_reason="")
    )


def gpus_cordon(*, gpus: Any, cordoned: bool) -> int:
    """Cordon (take out of scheduling; an instance on it keeps running) or uncordon GPUs."""
    return Gpu.objects.filter(pk__in=[g.pk for g in gpus]).update(enabled=not cordoned)
