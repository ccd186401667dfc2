"""Admin → GPU-fault credits: each credit, the segment it covers and the health events behind it."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join

from billing.fault_models import FaultCredit


@admin.register(FaultCredit)
class FaultCreditAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "amount_usd", "credited_seconds", "fault_at", "usage")
    list_select_related = ("usage", "usage__user", "entry")
    readonly_fields = ("entry", "usage", "fault_at", "credited_seconds", "amount_usd", "created_at", "behind")
    exclude = ("events",)

    @admin.display(description="User")
    def user(self, obj: FaultCredit) -> str:
        return obj.usage.user.get_username()

    @admin.display(description="Health events behind it")
    def behind(self, obj: FaultCredit) -> str:
        return format_html_join(
            "",
            "<div>{} {} on {} (seen {} times)</div>",
            (
                (f"{e.at:%Y-%m-%d %H:%M:%S}", e.code, e.gpu, e.times_seen)
                for e in obj.events.select_related("gpu__host")
            ),
        )

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
