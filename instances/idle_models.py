"""Idle stop and maximum runtime: the operator's rules and each instance's watch.

An operator sets an idle rule per template (the window, the GPU threshold, how far a
customer may lengthen it, whether a customer may turn it off) and a default maximum
runtime per GPU type. Each instance has one watch row, kept by its host's worker
(instances.services.idle): the last time activity was seen, the warnings sent, the
customer's overrides and keep-alive.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from templates_app.models import Template


class IdleRule(models.Model):
    """The operator's idle rule of one template (none: no idle stop for it)."""

    template = models.OneToOneField(Template, on_delete=models.CASCADE, related_name="idle_rule")
    idle_seconds = models.PositiveIntegerField(
        default=3600, help_text="Stop after this long idle (GPU under the threshold and nothing connected); 0: off."
    )
    gpu_threshold_percent = models.PositiveSmallIntegerField(
        default=5, help_text="GPU utilization at or above this counts as activity."
    )
    max_idle_seconds = models.PositiveIntegerField(
        default=6 * 3600, help_text="The longest idle window a customer may choose for an instance."
    )
    customer_may_disable = models.BooleanField(default=True, help_text="Customers may turn idle stop off.")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(gpu_threshold_percent__lte=100), name="idlerule_threshold_percent"),
        ]

    def __str__(self) -> str:
        return f"idle rule of {self.template_id}"


class RuntimeRule(models.Model):
    """The operator's default maximum runtime of instances on one GPU type."""

    gpu_type = models.OneToOneField("instances.GpuType", on_delete=models.CASCADE, related_name="runtime_rule")
    max_runtime_seconds = models.PositiveIntegerField(help_text="Stop a running instance after this long; 0: none.")

    def __str__(self) -> str:
        return f"runtime rule of {self.gpu_type_id}"


class InstanceWatch(models.Model):
    """What the worker saw of one instance's activity and what the customer chose."""

    instance = models.OneToOneField("instances.Instance", on_delete=models.CASCADE, related_name="watch")
    # The customer's choices; null: the operator's default.
    idle_seconds = models.PositiveIntegerField(null=True, blank=True)
    idle_disabled = models.BooleanField(default=False)
    max_runtime_seconds = models.PositiveIntegerField(null=True, blank=True)
    keep_alive_until = models.DateTimeField(null=True, blank=True)
    # Kept by the host's worker.
    last_active_at = models.DateTimeField(null=True, blank=True)
    measured_at = models.DateTimeField(null=True, blank=True)
    gpu_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    connections = models.PositiveIntegerField(default=0)
    activity = models.JSONField(default=dict, blank=True)
    # The deadline a warning was sent for (a keep-alive or new activity re-arms it).
    idle_warned_for = models.DateTimeField(null=True, blank=True)
    runtime_warned_for = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"watch of {self.instance_id}"
