"""The admission check instances calls before a launch or start (GPUCLOUD_ADMISSION_CHECKS)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from billing.errors import InsufficientBalance
from billing.selectors import balance_get
from billing.services.ledger import money


def balance_covers_launch(*, user: Any, gpu_type: Any, template: Any) -> None:
    """Refuse a launch or start unless the balance covers GPUCLOUD_MIN_BALANCE_MINUTES at
    the type's rate. Raises InsufficientBalance (402, `billing:insufficient-balance`)."""
    minutes = settings.GPUCLOUD_MIN_BALANCE_MINUTES
    required = money(gpu_type.rate_per_hour * minutes / 60)
    balance = balance_get(user=user)
    if balance < required:
        raise InsufficientBalance(
            f"A {gpu_type} needs a balance of at least ${required} ({minutes} minutes); yours is ${money(balance)}.",
            detail={
                "balance_usd": str(money(balance)),
                "required_usd": str(required),
                "minimum_minutes": minutes,
                "gpu_type": gpu_type.sku,
            },
        )
