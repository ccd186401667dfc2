"""GPU power samples over time: what operator economics integrates into energy.

`Gpu.power_w` holds only the latest reading; each metrics run of a host's worker also
appends one row per GPU here (instances.host.inventory), pruned after
GPUCLOUD_POWER_SAMPLE_DAYS.
"""

from __future__ import annotations

from django.db import models


class GpuPowerSample(models.Model):
    gpu = models.ForeignKey("instances.Gpu", on_delete=models.CASCADE, related_name="power_samples")
    at = models.DateTimeField()
    power_w = models.DecimalField(max_digits=7, decimal_places=1)

    class Meta:
        indexes = [
            models.Index(fields=["gpu", "at"], name="gpu_power_sample_gpu_at"),
            models.Index(fields=["at"], name="gpu_power_sample_at"),
        ]

    def __str__(self) -> str:
        return f"{self.gpu_id} {self.power_w} W at {self.at:%Y-%m-%d %H:%M:%S}"
