"""A credit for a GPU that fell ill while rented (billing.services.fault_credits).

One per GPU usage segment (the unique `usage`, and the ledger key `gpu-fault:<segment>`),
however often the fault was seen; it points at the health events behind it.
"""

from __future__ import annotations

from django.db import models

from billing.models import LedgerEntry, UsageRecord
from instances.models import GpuHealthEvent


class FaultCredit(models.Model):
    entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="fault_credit")
    usage = models.OneToOneField(UsageRecord, on_delete=models.PROTECT, related_name="fault_credit")
    events = models.ManyToManyField(GpuHealthEvent, related_name="credits")
    # The first sign of the fault, and the segment's seconds from then to its end.
    fault_at = models.DateTimeField()
    credited_seconds = models.PositiveIntegerField()
    amount_usd = models.DecimalField(max_digits=14, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"GPU-fault credit ${self.amount_usd} for segment {self.usage_id}"
