"""What a customer hears about, and how: preferences, webhook endpoints, deliveries."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Event(models.TextChoices):
    INSTANCE_RUNNING = "instance.running", "Instance running"
    INSTANCE_FAILED = "instance.failed", "Instance failed"
    INSTANCE_STOPPED = "instance.stopped", "Instance stopped (idle, maximum runtime or billing)"
    IDLE_WARNING = "instance.idle_warning", "Idle stop coming"
    RUNTIME_WARNING = "instance.runtime_warning", "Maximum runtime reached soon"
    LOW_BALANCE = "billing.low_balance", "Low balance"
    TOPUP_RECEIVED = "billing.topup_received", "Top-up received"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class NotificationPreference(models.Model):
    """Whether one event goes to one channel for a user (no row: the default, on)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=40, choices=Event.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "event", "channel"], name="notify_pref_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.event} {self.channel}={self.enabled}"


class WebhookEndpoint(models.Model):
    """A customer's URL; deliveries are signed with its secret (stored encrypted)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=100, blank=True)
    secret_encrypted = models.TextField()
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event sent to one endpoint, with every attempt's outcome in `attempts`."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUSED = "refused", "Refused (address not allowed)"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40, choices=Event.choices)
    # The event's id (`evt_…`): the same on a replay, so receivers can deduplicate.
    event_id = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    attempts = models.JSONField(default=list, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    replay_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "succeeded", "failed", "refused"]), name="delivery_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"
