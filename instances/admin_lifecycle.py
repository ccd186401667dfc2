"""The operator's lifecycle controls in the admin: stop, start, restart and destroy
instances, as changelist actions (one or many selected) and as buttons on an
instance's change page.

Each calls the lifecycle service as the operator (source `operator`, actor the signed-in
user, a reason), so the act lands on the instance's timeline like any other. A refusal
(any DomainError: a transition the status does not allow, no free GPU, billing's
admission check) is reported for that instance in words and the others go on. Only users
with `instances.change_instance` may act; destroy asks first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from gpucloud.errors import DomainError
from instances import services
from instances.models import Instance, InstanceEvent

Status = Instance.Status


@dataclass(frozen=True)
class LifecycleOp:
    """One lifecycle act as the admin offers it."""

    service: Callable[..., Instance]
    label: str  # the button
    doing: str  # the success message
    reason: str  # on the timeline, unless the operator gave one


OPS: dict[str, LifecycleOp] = {
    "stop": LifecycleOp(services.instance_stop, "Stop", "Stopping", "stopped by an operator in the admin"),
    "start": LifecycleOp(services.instance_start, "Start", "Starting", "started by an operator in the admin"),
    "restart": LifecycleOp(services.instance_restart, "Restart", "Restarting", "restarted by an operator in the admin"),
    "destroy": LifecycleOp(services.instance_destroy, "Destroy", "Destroying", "destroyed by an operator in the admin"),
}

# Which buttons an instance's page shows for its status. Only a hint: the service
# checks the transition again under the row lock and its refusal is shown.
OFFERED: dict[str, tuple[str, ...]] = {
    Status.RUNNING: ("restart", "stop", "destroy"),
    Status.STOPPED: ("start", "destroy"),
    Status.FAILED: ("start", "destroy"),
    Status.PENDING: ("destroy",),
    Status.PROVISIONING: ("destroy",),
    Status.STARTING: ("destroy",),
    Status.STOPPING: ("destroy",),
}


def lifecycle_apply(*, request: HttpRequest, instances: Iterable[Instance], op: str, reason: str = "") -> int:
    """Run one lifecycle service on each instance as the signed-in operator.

    Each success and each refusal becomes a message; a refusal (DomainError) does not
    stop the others. Returns how many were accepted.
    """
    chosen = OPS[op]
    accepted: list[str] = []
    for instance in instances:
        try:
            chosen.service(
                instance=instance,
                actor=request.user,
                source=InstanceEvent.Source.OPERATOR,
                reason=reason.strip()[:500] or chosen.reason,
            )
        except DomainError as exc:  # refused for this one only: report it, go on
            messages.error(request, f"{instance.public_id}: {exc.message}")
        else:
            accepted.append(instance.public_id)
    if accepted:
        messages.success(request, f"{chosen.doing} {len(accepted)} instance(s): {', '.join(accepted)}.")
    return len(accepted)


class InstanceLifecycleAdmin(admin.ModelAdmin):
    """Stop / start / restart / destroy for InstanceAdmin (actions and page buttons)."""

    actions = ("stop_instances", "start_instances", "restart_instances", "destroy_instances")

    def _selected(self, queryset: QuerySet[Instance]) -> QuerySet[Instance]:
        # What the services read of each instance, in one query.
        return queryset.select_related("owner", "template", "gpu_type", "host", "gpu").order_by("pk")

    @admin.action(permissions=["change"], description="Stop selected instances (GPU released, /workspace kept)")
    def stop_instances(self, request: HttpRequest, queryset: QuerySet[Instance]) -> None:
        lifecycle_apply(request=request, instances=self._selected(queryset), op="stop")

    @admin.action(permissions=["change"], description="Start selected instances (a free GPU of their type)")
    def start_instances(self, request: HttpRequest, queryset: QuerySet[Instance]) -> None:
        lifecycle_apply(request=request, instances=self._selected(queryset), op="start")

    @admin.action(permissions=["change"], description="Restart selected instances (same GPU and ports)")
    def restart_instances(self, request: HttpRequest, queryset: QuerySet[Instance]) -> None:
        lifecycle_apply(request=request, instances=self._selected(queryset), op="restart")

    @admin.action(permissions=["change"], description="Destroy selected instances…")
    def destroy_instances(self, request: HttpRequest, queryset: QuerySet[Instance]) -> HttpResponse | None:
        instances = list(self._selected(queryset))
        if request.POST.get("confirmed") != "yes":
            # Django's intermediate page: the form posts this action back with the ids.
            hidden = [(ACTION_CHECKBOX_NAME, i.pk) for i in instances] + [("action", "destroy_instances")]
            return self._destroy_confirmation(request, instances=instances, hidden=hidden)
        lifecycle_apply(request=request, instances=instances, op="destroy", reason=request.POST.get("reason", ""))
        return None

    def _destroy_confirmation(
        self, request: HttpRequest, *, instances: list[Instance], hidden: list[tuple[str, Any]]
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Destroy instances?",
            "opts": self.model._meta,
            "instances": instances,
            "hidden": hidden,
        }
        return TemplateResponse(request, "admin/instances/instance/destroy_confirmation.html", context)

    # -- buttons on one instance's page ------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: their "<path:object_id>/" would swallow these paths.
        own = [
            path(
                "<path:object_id>/lifecycle/<str:op>/",
                self.admin_site.admin_view(self.lifecycle_view),
                name="instances_instance_lifecycle",
            )
        ]
        return own + super().get_urls()

    def lifecycle_view(self, request: HttpRequest, object_id: str, op: str) -> HttpResponse:
        """POST: run `op` on this instance as the operator, back to its page. Destroy
        shows a confirmation first (GET, or a POST without `confirmed=yes`)."""
        if op not in OPS:
            raise Http404("No such lifecycle action.")
        instance = self.get_object(request, unquote(object_id))
        if instance is None:
            raise Http404("No such instance.")
        if not self.has_change_permission(request, instance):
            raise PermissionDenied
        if op == "destroy" and (request.method != "POST" or request.POST.get("confirmed") != "yes"):
            return self._destroy_confirmation(request, instances=[instance], hidden=[])
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        lifecycle_apply(request=request, instances=[instance], op=op, reason=request.POST.get("reason", ""))
        return redirect(reverse("admin:instances_instance_change", args=[instance.pk]))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Instance | None = None,
    ) -> HttpResponse:
        buttons = []
        if obj is not None and self.has_change_permission(request, obj):
            buttons = [
                (op, OPS[op].label, reverse("admin:instances_instance_lifecycle", args=[obj.pk, op]))
                for op in OFFERED.get(obj.status, ())
            ]
        context["lifecycle_buttons"] = buttons
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)
