"""Operators' view of every snapshot (sizes, where it is stored, its state) and of
restores; deleting one goes through the service, so billing stops and the object goes."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

from instances.models import Snapshot, SnapshotRestore
from instances.services.events import Source
from instances.services.snapshots import snapshot_delete


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ("public_id", "owner", "instance", "name", "status", "stored", "content", "store", "created_at")
    list_filter = ("status", "store")
    search_fields = ("public_id", "owner__username", "instance__public_id", "name")
    list_select_related = ("owner", "instance")
    readonly_fields = [f.name for f in Snapshot._meta.fields]
    actions = ("delete_snapshots",)
    date_hierarchy = "created_at"

    @admin.display(description="stored", ordering="size_bytes")
    def stored(self, snapshot: Snapshot) -> str:
        return filesizeformat(snapshot.size_bytes) if snapshot.size_bytes is not None else "—"

    @admin.display(description="files", ordering="content_bytes")
    def content(self, snapshot: Snapshot) -> str:
        return filesizeformat(snapshot.content_bytes) if snapshot.content_bytes is not None else "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Snapshot | None = None) -> bool:
        return False  # the action below: a row deleted by hand would keep its object and its billing

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):  # type: ignore[no-untyped-def]
        stored = Snapshot.objects.filter(status=Snapshot.Status.READY).aggregate(total=Sum("size_bytes"))["total"]
        extra = {**(extra_context or {}), "title": f"Snapshots · {filesizeformat(stored or 0)} stored"}
        return super().changelist_view(request, extra)

    @admin.action(description="Delete the selected snapshots (billing stops, the objects are removed)")
    def delete_snapshots(self, request: HttpRequest, queryset: QuerySet[Snapshot]) -> None:
        for snapshot in queryset.exclude(status=Snapshot.Status.DELETED):
            snapshot_delete(snapshot=snapshot, actor=request.user, source=Source.OPERATOR)
        messages.success(request, "Deleted.")


@admin.register(SnapshotRestore)
class SnapshotRestoreAdmin(admin.ModelAdmin):
    list_display = ("snapshot", "instance", "status", "done_bytes", "total_bytes", "created_at", "finished_at")
    list_filter = ("status",)
    list_select_related = ("snapshot", "instance")
    readonly_fields = [f.name for f in SnapshotRestore._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
