"""GPU health: each GPU's quarantine state and its append-only health history.

A GPU whose health check finds a fault is *quarantined*: the scheduler hands it to
nobody (instances.services.scheduling) until an operator returns it to service
(admin → GPU health), which starts a new *episode*. Within an episode a fault code is
recorded once, however often it is seen (`times_seen`, `last_seen_at` grow), so what
the fault costs its customer is credited once.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from instances.models import Gpu, Instance


class GpuHealthState(models.Model):
    """The latest verdict on one GPU (a row appears with its first health check)."""

    gpu = models.OneToOneField(Gpu, on_delete=models.CASCADE, primary_key=True, related_name="health")
    quarantined = models.BooleanField(default=False, db_index=True)
    quarantined_at = models.DateTimeField(null=True, blank=True)
    quarantine_reason = models.TextField(blank=True)
    # Bumped by each return to service: faults are recorded once per episode.
    episode = models.PositiveIntegerField(default=0)
    # Lifetime uncorrectable ECC errors accepted at the last return to service.
    ecc_aggregate_baseline = models.PositiveBigIntegerField(default=0)
    checked_at = models.DateTimeField(null=True, blank=True)
    last_reading = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "GPU health"
        verbose_name_plural = "GPU health"

    def __str__(self) -> str:
        return f"{self.gpu} {'quarantined' if self.quarantined else 'in service'}"


class GpuHealthEvent(models.Model):
    """One fault seen on a GPU (first sign at `at`), or an operator's return to service."""

    class Kind(models.TextChoices):
        FAULT = "fault", "Fault"
        RETURNED = "returned", "Returned to service"

    class Source(models.TextChoices):
        GATE = "gate", "Check before a rental"
        WATCH = "watch", "Check while rented"
        OPERATOR = "operator", "Operator"

    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="health_events")
    episode = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    code = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    # The policy's verdict when it was first seen (GPUCLOUD_GPU_FAULT_STOP): stop the
    # instance on it and credit its customer, or only warn.
    stops = models.BooleanField(default=False)
    at = models.DateTimeField(db_index=True)
    last_seen_at = models.DateTimeField()
    times_seen = models.PositiveIntegerField(default=1)
    # The instance holding the GPU when the fault was first seen (none when it was idle).
    instance = models.ForeignKey(
        Instance, on_delete=models.SET_NULL, null=True, blank=True, related_name="gpu_health_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    message = models.TextField(blank=True)
    reading = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["gpu", "episode", "code"], condition=Q(kind="fault"), name="gpu_fault_once_per_episode"
            ),
            models.CheckConstraint(condition=Q(kind__in=["fault", "returned"]), name="gpu_health_event_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.gpu} {self.code or self.kind} @ {self.at:%Y-%m-%d %H:%M:%S}"
