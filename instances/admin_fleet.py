"""The fleet in the admin: each host's last beat and why it is not online, what runs
where, drain and return to service, cordon and uncordon GPUs; the moves of workspaces between hosts."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from instances.models import Gpu, Host, Instance, InstanceMove
from instances.services.fleet import gpus_cordon, host_drain, host_undrain


@admin.action(description="Drain: no new instances (running ones are told and keep running)")
def drain_hosts(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Host]) -> None:
    told = {host.name: len(host_drain(host=host, actor=request.user)) for host in queryset}
    modeladmin.message_user(request, "Draining: " + ", ".join(f"{n} ({c} instances told)" for n, c in told.items()))


@admin.action(description="Return to service (draining → online)")
def undrain_hosts(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Host]) -> None:
    back = [host.name for host in queryset if host_undrain(host=host)]
    modeladmin.message_user(request, f"Back in service: {', '.join(back) or 'none (only draining hosts)'}")


@admin.action(description="Cordon: rent these GPUs to nobody (what runs keeps running)")
def cordon_gpus(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Gpu]) -> None:
    modeladmin.message_user(request, f"Cordoned {gpus_cordon(gpus=queryset, cordoned=True)} GPUs.")


@admin.action(description="Uncordon: rent these GPUs again")
def uncordon_gpus(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Gpu]) -> None:
    modeladmin.message_user(request, f"Uncordoned {gpus_cordon(gpus=queryset, cordoned=False)} GPUs.")


def last_beat(obj: Host) -> str:
    """When its worker last beat, and why the host is not online."""
    beat = (obj.facts or {}).get("heartbeat") or {}
    engine = "engine answers" if beat.get("engine_ok") else f"engine: {beat.get('engine_error') or 'unknown'}"
    when = f"{obj.last_heartbeat_at:%Y-%m-%d %H:%M:%S}" if obj.last_heartbeat_at else "never"
    return f"{when} ({engine})" + (f" — {obj.status_reason}" if obj.status_reason else "")


def runs_here(obj: Host) -> str:
    """The host's live instances: which GPU, whose, in which status."""
    live = Instance.objects.filter(host=obj, status__in=Instance.LIVE).select_related("gpu", "owner")
    rows = ((i.public_id, f"gpu{i.gpu.index}" if i.gpu else "-", i.owner, i.status) for i in live.order_by("gpu"))
    return format_html("<ul>{}</ul>", format_html_join("", "<li>{} on {} ({}, {})</li>", rows)) if live else "nothing"


@admin.register(InstanceMove)
class InstanceMoveAdmin(admin.ModelAdmin):
    """Workspaces moved between hosts (instances.services.move): read-only, the moves
    are the customers' and the workers'."""

    list_display = ("instance", "from_host", "to_host", "status", "size_bytes", "created_at", "finished_at")
    list_filter = ("status", "from_host", "to_host")
    search_fields = ("instance__public_id", "last_error")
    list_select_related = ("instance", "from_host", "to_host")
    readonly_fields = [f.name for f in InstanceMove._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: InstanceMove | None = None) -> bool:
        return False
