"""The instance page's snapshots: take one, restore one, delete one, destroy keeping one;
a partial that shows their progress (polled while any is moving)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from gpucloud.errors import DomainError
from instances import selectors
from instances.errors import NotFound
from instances.models import Instance, Snapshot
from instances.services.snapshots import (
    IN_PROGRESS,
    RESTORING,
    snapshot_create,
    snapshot_delete,
    snapshot_get,
    snapshot_list,
    snapshot_restore,
)
from instances.services.transitions import instance_destroy_keeping_snapshot


def _get(request: HttpRequest, public_id: str) -> Instance:
    try:
        return selectors.instance_get(user=request.user, public_id=public_id)
    except NotFound as exc:  # another user's instance: as if it did not exist
        raise Http404(exc.message) from exc


@login_required
@require_GET
def instance_snapshots(request: HttpRequest, public_id: str) -> HttpResponse:
    instance = _get(request, public_id)
    mine = list(snapshot_list(user=request.user))
    restore = instance.restores.select_related("snapshot").first()
    context = {
        "instance": instance,
        "snapshots": [s for s in mine if s.instance_id == instance.pk],
        "restorable": [s for s in mine if s.status == Snapshot.Status.READY],
        "restore": restore,
        "moving": any(s.status in IN_PROGRESS for s in mine) or (restore is not None and restore.status in RESTORING),
    }
    return render(request, "instances/_snapshots.html", context)


def _back(instance: Instance) -> HttpResponse:
    return redirect("web:instance", public_id=instance.public_id)


@login_required
@require_POST
def instance_snapshot(request: HttpRequest, public_id: str) -> HttpResponse:
    instance = _get(request, public_id)
    try:
        snapshot = snapshot_create(instance=instance, name=request.POST.get("name", ""), actor=request.user)
        messages.success(request, f"Taking snapshot {snapshot.public_id} of /workspace.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return _back(instance)


@login_required
@require_POST
def instance_restore(request: HttpRequest, public_id: str) -> HttpResponse:
    instance = _get(request, public_id)
    try:
        snapshot = snapshot_get(user=request.user, public_id=request.POST.get("snapshot", ""))
        snapshot_restore(snapshot=snapshot, instance=instance, actor=request.user)
        messages.success(request, f"Restoring {snapshot.public_id}: /workspace is replaced once it is complete.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return _back(instance)


@login_required
@require_POST
def instance_destroy_keep(request: HttpRequest, public_id: str) -> HttpResponse:
    instance = _get(request, public_id)
    try:
        _, snapshot = instance_destroy_keeping_snapshot(instance=instance, actor=request.user)
        messages.success(request, f"Destroying {instance.public_id}; its workspace is kept as {snapshot.public_id}.")
    except DomainError as exc:
        messages.error(request, exc.message)
        return _back(instance)
    return redirect("web:dashboard")


@login_required
@require_POST
def snapshot_remove(request: HttpRequest, snapshot_id: str) -> HttpResponse:
    try:
        snapshot = snapshot_get(user=request.user, public_id=snapshot_id)
    except DomainError as exc:
        raise Http404(exc.message) from exc
    snapshot_delete(snapshot=snapshot, actor=request.user)
    messages.success(request, f"Snapshot {snapshot.public_id} deleted: it is no longer billed.")
    return redirect("web:instance", public_id=snapshot.instance.public_id)
