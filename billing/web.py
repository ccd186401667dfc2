"""What the customer pages need from billing: the balance on every page, costs per instance.

Wired by settings (a context processor and GPUCLOUD_INSTANCE_COSTS), so the instances
app never imports billing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.http import HttpRequest

from billing.models import UsageRecord
from billing.selectors import balance_get


def balance(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"balance_usd": None}
    return {"balance_usd": balance_get(user=user)}


def instance_costs(*, instance_ids: list[int]) -> dict[int, Decimal]:
    """Billed so far per instance (GPU and storage), in one query."""
    rows = (
        UsageRecord.objects.filter(instance_id__in=instance_ids)
        .values("instance_id")
        .annotate(total=Sum("billed_usd"))
        .values_list("instance_id", "total")
    )
    return {instance_id: total or Decimal(0) for instance_id, total in rows}
