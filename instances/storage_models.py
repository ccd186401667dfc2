"""What a workspace holds: the last measured used / size of its quota'd filesystem."""

from __future__ import annotations

from typing import Any

from django.db import models


class WorkspaceUsage(models.Model):
    """Measured by the host's worker while the workspace is mounted (every
    GPUCLOUD_WORKSPACE_USAGE_SECONDS and when its container goes); a stopped instance
    shows its last measure."""

    instance = models.OneToOneField(
        "instances.Instance", on_delete=models.CASCADE, primary_key=True, related_name="workspace_usage"
    )
    used_bytes = models.BigIntegerField()
    size_bytes = models.BigIntegerField()
    measured_at = models.DateTimeField()
    # Set when the customer was told the workspace passed the low-space threshold;
    # cleared when it drops below again, so the next crossing tells them again.
    low_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "workspace usage"
        verbose_name_plural = "workspace usage"

    def __str__(self) -> str:
        return f"{self.used_bytes}/{self.size_bytes}"

    @property
    def percent(self) -> float:
        return round(100.0 * self.used_bytes / self.size_bytes, 1) if self.size_bytes else 0.0


def workspace_usage_text(instance: Any) -> str:
    """ "1.2 / 10.0 GiB (12%)" for pages and the admin; "not measured yet" before the first."""
    try:
        usage = instance.workspace_usage
    except WorkspaceUsage.DoesNotExist:
        return "not measured yet"
    return f"{usage.used_bytes / 2**30:.1f} / {usage.size_bytes / 2**30:.1f} GiB ({usage.percent:.0f}%)"
