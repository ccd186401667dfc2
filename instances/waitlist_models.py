"""The waitlist: launches that asked to wait (`?queue=1`) for a GPU of a full type.

An entry holds the validated launch request, never a GPU, a port or an instance, so
nothing of it is billed; `instances.services.waitlist` grants entries oldest first as
GPUs free up, launching them through the ordinary launch (admission checked again).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q


def new_waitlist_id() -> str:
    return "wait_" + secrets.token_hex(6)


class WaitlistEntry(models.Model):
    class Status(models.TextChoices):
        WAITING = "waiting", "Waiting"
        GRANTING = "granting", "Being granted"
        GRANTED = "granted", "Granted"
        CANCELLED = "cancelled", "Cancelled"
        REFUSED = "refused", "Refused"

    public_id = models.CharField(max_length=32, unique=True, default=new_waitlist_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="waitlist_entries")
    gpu_type = models.ForeignKey("instances.GpuType", on_delete=models.PROTECT, related_name="waitlist_entries")
    template = models.ForeignKey("templates_app.Template", on_delete=models.PROTECT, related_name="+")
    # The launch request as validated (storage_gb, access, name, ssh_public_keys,
    # ssh_password_auth, env): what the grant launches.
    request = models.JSONField(default=dict)
    # The launch's idempotency key at the grant (the customer's, or one of the entry's
    # own): a grant repeated after a crash returns the instance it made, never a second.
    idempotency_key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.WAITING, db_index=True)
    instance = models.OneToOneField(
        "instances.Instance", on_delete=models.SET_NULL, null=True, blank=True, related_name="waitlist_entry"
    )
    reason = models.TextField(blank=True, help_text="Why it was refused at its turn.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "waitlist entries"
        constraints = [
            models.UniqueConstraint(fields=["owner", "idempotency_key"], name="waitlist_owner_key_unique"),
            models.CheckConstraint(
                condition=Q(status__in=["waiting", "granting", "granted", "cancelled", "refused"]),
                name="waitlist_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.status})"
