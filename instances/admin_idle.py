"""Admin of idle rules (per template), runtime rules (per GPU type) and webhook deliveries."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from instances.idle_models import IdleRule, InstanceWatch, RuntimeRule
from instances.notify.models import WebhookDelivery, WebhookEndpoint
from instances.notify.services import delivery_replay


@admin.register(IdleRule)
class IdleRuleAdmin(admin.ModelAdmin):
    list_display = ("template", "idle_seconds", "gpu_threshold_percent", "max_idle_seconds", "customer_may_disable")
    list_select_related = ("template",)


@admin.register(RuntimeRule)
class RuntimeRuleAdmin(admin.ModelAdmin):
    list_display = ("gpu_type", "max_runtime_seconds")


@admin.register(InstanceWatch)
class InstanceWatchAdmin(admin.ModelAdmin):
    list_display = ("instance", "measured_at", "gpu_percent", "connections", "last_active_at", "keep_alive_until")
    readonly_fields = ("last_active_at", "measured_at", "gpu_percent", "connections", "activity")
    raw_id_fields = ("instance",)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "owner", "enabled", "created_at")
    exclude = ("secret_encrypted",)  # the owner's signing secret stays theirs
    readonly_fields = ("owner", "url", "created_at")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("event_id", "event", "endpoint", "status", "last_status_code", "created_at")
    list_filter = ("status", "event")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ("replay",)

    @admin.action(description="Send the selected deliveries again")
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset.select_related("endpoint"):
            delivery_replay(delivery=delivery)
        messages.success(request, f"{queryset.count()} deliveries sent again.")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
