"""Admin → GPU health: each GPU's verdict, why it is quarantined, its health history,
and the operator's "return to service" (recorded as a `returned` event with the operator)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from gpucloud.errors import DomainError
from instances.health_models import GpuHealthEvent, GpuHealthState
from instances.services.quarantine import gpu_return_to_service


@admin.register(GpuHealthState)
class GpuHealthStateAdmin(admin.ModelAdmin):
    list_display = ("gpu", "quarantined", "quarantined_at", "quarantine_reason", "episode", "checked_at")
    list_filter = ("quarantined", "gpu__host")
    list_select_related = ("gpu", "gpu__host")
    search_fields = ("gpu__uuid", "gpu__host__name", "quarantine_reason")
    readonly_fields = (
        "gpu",
        "quarantined",
        "quarantined_at",
        "quarantine_reason",
        "episode",
        "ecc_aggregate_baseline",
        "checked_at",
        "last_reading",
        "history",
    )
    actions = ("return_to_service",)

    @admin.display(description="Health history (newest first)")
    def history(self, obj: GpuHealthState) -> str:
        events = GpuHealthEvent.objects.filter(gpu=obj.gpu_id).select_related("instance", "actor")[:200]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f"{e.at:%Y-%m-%d %H:%M:%S}",
                    e.get_kind_display(),
                    e.code,
                    e.get_source_display(),
                    "stops + credits" if e.stops else "warns",
                    e.times_seen,
                    e.instance.public_id if e.instance else (e.actor.get_username() if e.actor else ""),
                    e.message,
                )
                for e in events
            ),
        )
        head = "<tr><th>At</th><th>Kind</th><th>Code</th><th>Seen by</th><th>Policy</th><th>Times</th><th>Instance / operator</th><th>Why</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(head), rows)  # noqa: S308 (a constant)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(permissions=["change"], description="Return the selected GPUs to service (after a fix)")
    def return_to_service(self, request: HttpRequest, queryset: QuerySet[GpuHealthState]) -> None:
        for state in queryset.select_related("gpu", "gpu__host"):
            try:
                gpu_return_to_service(gpu=state.gpu, actor=request.user)
            except DomainError as exc:
                self.message_user(request, f"{state.gpu}: {exc.message}", messages.WARNING)
            else:
                self.message_user(request, f"{state.gpu} returned to service.", messages.SUCCESS)


@admin.register(GpuHealthEvent)
class GpuHealthEventAdmin(admin.ModelAdmin):
    list_display = ("at", "gpu", "kind", "code", "source", "stops", "times_seen", "instance", "actor")
    list_filter = ("kind", "source", "stops", "code")
    list_select_related = ("gpu", "gpu__host", "instance", "actor")
    search_fields = ("gpu__uuid", "code", "instance__public_id")
    readonly_fields = [f.name for f in GpuHealthEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
