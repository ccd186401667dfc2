"""Snapshots of a workspace in the object store, and their restores.

A snapshot is a tar stream of the workspace, compressed with zstd and checksummed
(SHA-256 of the stored bytes), written to the store named in `store` under
`object_key` (instances.host.objectstore). It is listed as usable only once `ready`:
an upload that failed half-way leaves the row `pending` (retried) or `failed`, never a
half object that a restore could pick up.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q


def new_snapshot_id() -> str:
    return "snap_" + secrets.token_hex(6)


class Snapshot(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the host"
        UPLOADING = "uploading", "Uploading"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        DELETED = "deleted", "Deleted"

    public_id = models.CharField(max_length=32, unique=True, default=new_snapshot_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="snapshots")
    # The instance whose workspace it holds; it may be destroyed since (the snapshot stays).
    instance = models.ForeignKey("instances.Instance", on_delete=models.PROTECT, related_name="snapshots")
    name = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Which backend holds it ("local" or "s3", GPUCLOUD_SNAPSHOT_STORE when it was taken).
    store = models.CharField(max_length=16)
    object_key = models.CharField(max_length=255)
    size_bytes = models.BigIntegerField(null=True, blank=True)  # stored (compressed): billed
    content_bytes = models.BigIntegerField(null=True, blank=True)  # the tar stream: room a restore needs
    sha256 = models.CharField(max_length=64, blank=True)
    done_bytes = models.BigIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["owner", "-created_at"], name="snapshot_owner_created")]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="ready") | (Q(size_bytes__isnull=False) & ~Q(sha256="")),
                name="snapshot_ready_has_checksum",
            )
        ]

    def __str__(self) -> str:
        return self.public_id


class SnapshotRestore(models.Model):
    """A snapshot written into an instance's workspace: at its launch, or into a stopped one."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the host"
        RUNNING = "running", "Restoring"
        DONE = "done", "Restored"
        FAILED = "failed", "Failed"

    snapshot = models.ForeignKey(Snapshot, on_delete=models.PROTECT, related_name="restores")
    instance = models.ForeignKey("instances.Instance", on_delete=models.CASCADE, related_name="restores")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    done_bytes = models.BigIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.snapshot.public_id} → {self.instance.public_id}"
