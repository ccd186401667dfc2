"""What running the fleet costs the operator, as set in the admin (Operator costs): the
newest row is in force; with none, the settings GPUCLOUD_ELECTRICITY_USD_PER_KWH and
GPUCLOUD_HARDWARE_USD_PER_GPU_MONTH. Read by billing.economics."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class OperatorCosts(models.Model):
    electricity_usd_per_kwh = models.DecimalField(max_digits=8, decimal_places=4, help_text="USD per kWh.")
    hardware_usd_per_gpu_month = models.DecimalField(
        max_digits=10, decimal_places=2, default=0, help_text="Amortized hardware cost of one GPU per month (0: none)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "operator costs"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(electricity_usd_per_kwh__gte=0, hardware_usd_per_gpu_month__gte=0),
                name="operator_costs_non_negative",
            )
        ]

    def __str__(self) -> str:
        return f"${self.electricity_usd_per_kwh}/kWh, ${self.hardware_usd_per_gpu_month}/GPU-month"
