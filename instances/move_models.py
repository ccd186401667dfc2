"""A stopped instance's workspace moving to another host through the object store
(instances.services.move): snapshot on the old host, restore on the new one, the
old copy removed only after the new one is verified."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class InstanceMove(models.Model):
    class Status(models.TextChoices):
        SNAPSHOTTING = "snapshotting", "Snapshot on the old host"
        RESTORING = "restoring", "Restore on the new host"
        DONE = "done", "Moved"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.SNAPSHOTTING, Status.RESTORING)

    instance = models.ForeignKey("instances.Instance", on_delete=models.CASCADE, related_name="moves")
    from_host = models.ForeignKey("instances.Host", on_delete=models.PROTECT, related_name="+")
    to_host = models.ForeignKey("instances.Host", on_delete=models.PROTECT, related_name="+")
    snapshot = models.ForeignKey("instances.Snapshot", on_delete=models.PROTECT, related_name="+")
    # True when the move took the snapshot itself (removed, and never billed, once done);
    # False when it restores one the customer had (the old host was unreachable).
    snapshot_made = models.BooleanField(default=True)
    restore = models.ForeignKey(
        "instances.SnapshotRestore", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SNAPSHOTTING)
    size_bytes = models.BigIntegerField(default=0)  # the workspace's last measured use
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["instance"],
                condition=Q(status__in=("snapshotting", "restoring")),
                name="instance_move_one_active",
            )
        ]

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.from_host_id} → {self.to_host_id} ({self.status})"
