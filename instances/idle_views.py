"""The instance page's idle controls: keep alive, and the owner's idle and runtime settings."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from gpucloud.errors import DomainError
from instances import selectors
from instances.errors import InvalidIdleSettings, NotFound
from instances.models import Instance
from instances.services import idle_rules


def _get(request: HttpRequest, public_id: str) -> Instance:
    try:
        return selectors.instance_get(user=request.user, public_id=public_id)
    except NotFound as exc:  # another user's instance: as if it did not exist
        raise Http404(exc.message) from exc


def _number(value: str, *, scale: float, field: str) -> int | None:
    if not value.strip():
        return None
    try:
        return round(float(value) * scale)
    except ValueError as exc:
        raise InvalidIdleSettings(f"{field} must be a number.", detail={field: value}) from exc


@login_required
@require_POST
def instance_keep_alive(request: HttpRequest, public_id: str) -> HttpResponse:
    instance = _get(request, public_id)
    try:
        seconds = _number(request.POST.get("seconds", "3600"), scale=1, field="seconds") or 3600
        watch = idle_rules.keep_alive(instance=instance, actor=request.user, seconds=seconds)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Kept alive until {watch.keep_alive_until:%H:%M:%S} UTC.")
    return redirect("web:instance", public_id=public_id)


@login_required
@require_POST
def instance_idle(request: HttpRequest, public_id: str) -> HttpResponse:
    instance = _get(request, public_id)
    try:
        minutes = _number(request.POST.get("idle_minutes", ""), scale=60, field="idle_minutes")
        hours = _number(request.POST.get("max_runtime_hours", ""), scale=3600, field="max_runtime_hours")
        idle_rules.idle_settings_update(
            instance=instance,
            actor=request.user,
            idle_seconds=minutes,
            idle_disabled="idle_disabled" in request.POST,
            max_runtime_seconds=hours or None,
            clear=("max_runtime_seconds",) if hours == 0 else (),
        )
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Idle and runtime settings saved.")
    return redirect("web:instance", public_id=public_id)
