"""The idle and maximum-runtime rules of an instance, and what its owner may change:
the idle window (within the operator's limit), turning idle stop off (where allowed),
a maximum runtime, and keep-alive (postpone an idle stop).

The worker applies them (instances.services.idle); the API and the page call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.errors import InvalidIdleSettings, InvalidTransition
from instances.idle_models import IdleRule, InstanceWatch, RuntimeRule
from instances.models import Instance
from instances.services.events import Kind, Source, Status, event_add


@dataclass(frozen=True)
class Rules:
    idle_seconds: int  # 0: no idle stop
    gpu_threshold_percent: int
    max_idle_seconds: int
    customer_may_disable: bool
    max_runtime_seconds: int  # 0: none
    default_idle_seconds: int
    default_max_runtime_seconds: int


def watch_of(instance: Instance) -> InstanceWatch:
    watch, _ = InstanceWatch.objects.get_or_create(instance=instance)
    return watch


def warning_lead_seconds(window_seconds: int) -> int:
    """How long before a stop the customer is warned: the setting, or half the window
    when the window is shorter than twice that."""
    return min(settings.GPUCLOUD_IDLE_WARNING_SECONDS, window_seconds // 2)


def rules_for(instance: Instance, watch: InstanceWatch | None = None) -> Rules:
    """The operator's rules of the instance's template and GPU type with its owner's choices."""
    watch = watch if watch is not None else watch_of(instance)
    rule = IdleRule.objects.filter(template_id=instance.template_id).first()
    default_idle = rule.idle_seconds if rule else settings.GPUCLOUD_IDLE_DEFAULT_SECONDS
    max_idle = rule.max_idle_seconds if rule else max(default_idle, 6 * 3600)
    runtime_rule = RuntimeRule.objects.filter(gpu_type_id=instance.gpu_type_id).first()
    default_runtime = (
        runtime_rule.max_runtime_seconds if runtime_rule else settings.GPUCLOUD_MAX_RUNTIME_DEFAULT_SECONDS
    )
    idle = 0 if watch.idle_disabled else (watch.idle_seconds if watch.idle_seconds is not None else default_idle)
    runtime = watch.max_runtime_seconds if watch.max_runtime_seconds is not None else default_runtime
    return Rules(
        idle_seconds=idle,
        gpu_threshold_percent=rule.gpu_threshold_percent if rule else settings.GPUCLOUD_IDLE_GPU_THRESHOLD_PERCENT,
        max_idle_seconds=max_idle,
        customer_may_disable=rule.customer_may_disable if rule else True,
        max_runtime_seconds=runtime,
        default_idle_seconds=default_idle,
        default_max_runtime_seconds=default_runtime,
    )


def idle_settings_update(
    *,
    instance: Instance,
    actor: Any,
    idle_seconds: int | None = None,
    idle_disabled: bool | None = None,
    max_runtime_seconds: int | None = None,
    clear: tuple[str, ...] = (),
) -> InstanceWatch:
    """Change the owner's idle window, idle switch or maximum runtime of an instance.

    `clear` names fields to put back to the operator's default. Raises
    InvalidIdleSettings (400) for a window under a minute, beyond the operator's limit,
    or for turning idle stop off where the operator does not allow it.
    """
    with transaction.atomic():
        watch = InstanceWatch.objects.select_for_update().filter(instance=instance).first() or watch_of(instance)
        rules = rules_for(instance, watch)
        if idle_seconds is not None:
            if idle_seconds < 60 or idle_seconds > rules.max_idle_seconds:
                raise InvalidIdleSettings(
                    f"The idle window must be between 60 and {rules.max_idle_seconds} seconds.",
                    detail={"idle_seconds": idle_seconds, "max_idle_seconds": rules.max_idle_seconds},
                )
            if rules.default_idle_seconds and idle_seconds < rules.default_idle_seconds:
                raise InvalidIdleSettings(
                    f"The idle window may be lengthened, not shortened below {rules.default_idle_seconds} seconds.",
                    detail={"idle_seconds": idle_seconds, "default_idle_seconds": rules.default_idle_seconds},
                )
            watch.idle_seconds = idle_seconds
        if idle_disabled is not None:
            if idle_disabled and not rules.customer_may_disable:
                raise InvalidIdleSettings(
                    "The operator does not allow turning idle stop off for this template.",
                    detail={"idle_disabled": True},
                )
            watch.idle_disabled = idle_disabled
        if max_runtime_seconds is not None:
            if max_runtime_seconds < 60:
                raise InvalidIdleSettings(
                    "A maximum runtime is at least 60 seconds.", detail={"max_runtime_seconds": max_runtime_seconds}
                )
            watch.max_runtime_seconds = max_runtime_seconds
        for name in clear:
            setattr(watch, name, None)
        watch.save()
        event_add(
            instance=instance,
            kind=Kind.NOTE,
            source=Source.USER,
            actor=actor,
            message="Idle and runtime settings changed.",
            data={
                "idle_seconds": watch.idle_seconds,
                "idle_disabled": watch.idle_disabled,
                "max_runtime_seconds": watch.max_runtime_seconds,
            },
        )
    return watch


def keep_alive(*, instance: Instance, actor: Any, seconds: int, now: datetime | None = None) -> InstanceWatch:
    """Postpone the idle stop of a running instance: it counts as active until now +
    `seconds`. Raises InvalidIdleSettings for a duration out of bounds, InvalidTransition
    unless the instance is running."""
    if not 60 <= seconds <= settings.GPUCLOUD_KEEP_ALIVE_MAX_SECONDS:
        raise InvalidIdleSettings(
            f"Keep-alive lasts between 60 and {settings.GPUCLOUD_KEEP_ALIVE_MAX_SECONDS} seconds.",
            detail={"seconds": seconds, "max_seconds": settings.GPUCLOUD_KEEP_ALIVE_MAX_SECONDS},
        )
    now = now or timezone.now()
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        if locked.status != Status.RUNNING:
            raise InvalidTransition(
                f"Cannot keep alive an instance that is {locked.status}.",
                detail={"status": locked.status, "action": "keep-alive"},
            )
        watch = watch_of(locked)
        watch.keep_alive_until = now + timedelta(seconds=seconds)
        watch.idle_warned_for = None
        watch.save(update_fields=["keep_alive_until", "idle_warned_for"])
        event_add(
            instance=locked,
            kind=Kind.KEEP_ALIVE,
            source=Source.USER,
            actor=actor,
            message=f"Kept alive until {watch.keep_alive_until:%Y-%m-%d %H:%M:%S} UTC.",
            data={"until": watch.keep_alive_until.isoformat(), "seconds": seconds},
        )
    return watch


def idle_deadline(*, instance: Instance, watch: InstanceWatch, rules: Rules) -> datetime | None:
    """When the instance stops for idleness if nothing happens, or None (no idle stop)."""
    if not rules.idle_seconds or instance.started_at is None:
        return None
    marks = [m for m in (instance.started_at, watch.last_active_at, watch.keep_alive_until) if m is not None]
    return max(marks) + timedelta(seconds=rules.idle_seconds)


def runtime_deadline(*, instance: Instance, rules: Rules) -> datetime | None:
    """When the instance stops for its maximum runtime, or None."""
    if not rules.max_runtime_seconds or instance.started_at is None:
        return None
    return instance.started_at + timedelta(seconds=rules.max_runtime_seconds)


def idle_state(*, instance: Instance, now: datetime | None = None) -> dict[str, Any]:
    """What the API and the page show: the rules, the owner's choices, the last
    measurement, the coming stops and a pending warning."""
    now = now or timezone.now()
    # A read: an instance never measured yet shows the defaults, no row is written.
    watch = InstanceWatch.objects.filter(instance=instance).first() or InstanceWatch(instance=instance)
    rules = rules_for(instance, watch)
    running = instance.status == Status.RUNNING
    idle_at = idle_deadline(instance=instance, watch=watch, rules=rules) if running else None
    runtime_at = runtime_deadline(instance=instance, rules=rules) if running else None
    warnings = []
    if idle_at is not None and watch.idle_warned_for == idle_at:
        warnings.append(
            {"kind": "idle", "stop_at": idle_at, "seconds_left": max(0, int((idle_at - now).total_seconds()))}
        )
    if runtime_at is not None and watch.runtime_warned_for == runtime_at:
        warnings.append(
            {
                "kind": "max-runtime",
                "stop_at": runtime_at,
                "seconds_left": max(0, int((runtime_at - now).total_seconds())),
            }
        )
    return {
        "idle_seconds": rules.idle_seconds,
        "idle_disabled": watch.idle_disabled,
        "max_runtime_seconds": rules.max_runtime_seconds,
        "gpu_threshold_percent": rules.gpu_threshold_percent,
        "operator": {
            "default_idle_seconds": rules.default_idle_seconds,
            "max_idle_seconds": rules.max_idle_seconds,
            "customer_may_disable": rules.customer_may_disable,
            "default_max_runtime_seconds": rules.default_max_runtime_seconds,
        },
        "activity": {
            "measured_at": watch.measured_at,
            "last_active_at": watch.last_active_at,
            "gpu_percent": watch.gpu_percent,
            "connections": watch.connections,
        },
        "keep_alive_until": watch.keep_alive_until,
        "idle_stop_at": idle_at,
        "runtime_stop_at": runtime_at,
        "warnings": warnings,
    }
