"""The admission checks instances calls before a launch or start (GPUCLOUD_ADMISSION_CHECKS).

Each counts what the user already holds (instances.selectors.gpu_holdings) plus the GPU
asked for, so a run of launches cannot each pass on its own and together take the fleet.

Admission runs before, not inside, the transaction that takes the GPU. What bounds two
concurrent launches of one user passing together: instances takes a per-user lock around
admission and allocation (instances.services.launch.admission_lock), so the second one
is admitted only once the first one's instance is committed and counted.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from billing.errors import InsufficientBalance, LimitGpus, LimitInstances, LimitSpend, SpendCapReached
from billing.selectors import balance_get, limits_get, period_starts, spend_since
from billing.services.ledger import money
from instances import selectors as instance_selectors


def balance_covers_launch(*, user: Any, gpu_type: Any, template: Any) -> None:
    """Refuse a launch or start unless the balance covers GPUCLOUD_MIN_BALANCE_MINUTES of
    every GPU the user holds (at their types' rates) plus this one.

    Raises InsufficientBalance (402, `billing:insufficient-balance`; detail: the running
    rate per hour, the rate with this GPU, what is required and the balance)."""
    minutes = settings.GPUCLOUD_MIN_BALANCE_MINUTES
    held = instance_selectors.gpu_holdings(user=user)
    running = held["rate_per_hour"]
    rate = running + gpu_type.rate_per_hour
    required = money(rate * minutes / 60)
    balance = balance_get(user=user)
    if balance < required:
        holding = f" on top of the {held['gpus']} you hold (${money(running)}/h)" if held["gpus"] else ""
        raise InsufficientBalance(
            f"Running {gpu_type.with_article}{holding} needs a balance of at least ${required} ({minutes} minutes at "
            f"${money(rate)}/h); yours is ${money(balance)}.",
            detail={
                "balance_usd": str(money(balance)),
                "required_usd": str(required),
                "running_rate_per_hour_usd": str(money(running)),
                "rate_per_hour_usd": str(money(rate)),
                "gpus_held": held["gpus"],
                "minimum_minutes": minutes,
                "gpu_type": gpu_type.sku,
            },
        )


def limits_allow_launch(*, user: Any, gpu_type: Any, template: Any) -> None:
    """Refuse a launch or start that would take the user past their limits: instances
    and GPUs held at once, and the sum of the hourly rates held (UserLimits overrides,
    else GPUCLOUD_LIMIT_*; 0 means no limit).

    Raises LimitInstances, LimitGpus or LimitSpend (409; detail: held, limit)."""
    limits = limits_get(user=user)
    held = instance_selectors.gpu_holdings(user=user)
    cap = limits["max_instances"]
    if cap and held["instances"] + 1 > cap:
        raise LimitInstances(
            f"You hold {held['instances']} instances; your account allows {cap}. Stop or destroy one first.",
            detail={"instances_held": held["instances"], "limit": cap},
        )
    cap = limits["max_gpus"]
    if cap and held["gpus"] + 1 > cap:
        raise LimitGpus(
            f"You hold {held['gpus']} GPUs; your account allows {cap}. Stop or destroy an instance first.",
            detail={"gpus_held": held["gpus"], "limit": cap},
        )
    cap = limits["max_spend_per_hour_usd"]
    rate = held["rate_per_hour"] + gpu_type.rate_per_hour
    if cap and rate > Decimal(cap):
        raise LimitSpend(
            f"With {gpu_type.with_article} you would hold ${money(rate)}/h; your account allows ${money(Decimal(cap))}/h.",
            detail={
                "running_rate_per_hour_usd": str(money(held["rate_per_hour"])),
                "rate_per_hour_usd": str(money(rate)),
                "limit_usd": str(money(Decimal(cap))),
            },
        )


def spend_cap_allows_launch(*, user: Any, gpu_type: Any, template: Any, now: datetime | None = None) -> None:
    """Refuse a launch or start once the user's GPU and storage charges since the start
    of the UTC day (month) reach the daily (monthly) cap they set.

    Running instances are not stopped at the cap: the cap bounds new spending, and
    stopping someone's work is left to the balance reaching zero (billing.services).
    Raises SpendCapReached (409; detail: period, spent, cap)."""
    limits = limits_get(user=user)
    day, month = period_starts(now=now or timezone.now())
    for period, label, cap, since in (
        ("day", "daily", limits["daily_cap_usd"], day),
        ("month", "monthly", limits["monthly_cap_usd"], month),
    ):
        if cap is None:
            continue
        spent = spend_since(user=user, since=since)
        if spent >= cap:
            raise SpendCapReached(
                f"You spent ${money(spent)} this {period} (UTC); your {label} cap is ${money(cap)}. "
                "Raise it on the billing page to launch.",
                detail={"period": period, "spent_usd": str(money(spent)), "cap_usd": str(money(cap))},
            )
