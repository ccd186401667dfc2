"""The waitlist in the admin: the queue per GPU type (filter by type; oldest first), each
entry's position, and the grant run on demand (beat runs it every GPUCLOUD_WAITLIST_SECONDS)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from gpucloud.errors import DomainError
from instances.services import waitlist
from instances.waitlist_models import WaitlistEntry


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(admin.ModelAdmin):
    list_display = ("public_id", "gpu_type", "position", "owner", "template", "status", "created_at", "instance")
    list_filter = ("status", "gpu_type")
    list_select_related = ("gpu_type", "owner", "template", "instance")
    ordering = ("gpu_type__sku", "created_at", "id")
    search_fields = ("public_id", "owner__username", "owner__email")
    readonly_fields = [f.name for f in WaitlistEntry._meta.fields if f.name != "request"]
    exclude = ("request",)  # the customer's env may hold their secrets
    actions = ("grant_now", "cancel")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Position")
    def position(self, obj: WaitlistEntry) -> int | None:
        return waitlist.waitlist_position(entry=obj)

    @admin.action(description="Grant the waitlist now (every type, in order)")
    def grant_now(self, request: HttpRequest, queryset: QuerySet[WaitlistEntry]) -> None:
        self.message_user(request, f"{waitlist.waitlist_grant()} entries launched or refused.")

    @admin.action(description="Cancel the selected waiting entries")
    def cancel(self, request: HttpRequest, queryset: QuerySet[WaitlistEntry]) -> None:
        for entry in queryset:
            try:
                waitlist.waitlist_cancel(entry=entry)
            except DomainError as exc:
                self.message_user(request, f"{entry.public_id}: {exc.message}", level=messages.WARNING)
