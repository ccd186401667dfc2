"""The customer's own spend caps (billing.models.UserLimits): set from the billing page
and PATCH /api/billing/limits; billing.checks.spend_cap_allows_launch enforces them."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from billing.errors import InvalidLimits
from billing.models import UserLimits

# A cap above this is a typo, not a budget; the field holds 10 digits before the point.
CAP_MAX_USD = Decimal("1000000")
CAP_FIELDS = ("daily_cap_usd", "monthly_cap_usd")


def _cap(name: str, value: Any) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float | bool):
        # Money is never a float: a JSON number reaches here as a string (the serializer's).
        raise InvalidLimits(detail={"field": name})
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidLimits(detail={"field": name}) from exc
    if not amount.is_finite() or amount < 0 or amount > CAP_MAX_USD:
        raise InvalidLimits(
            f"{name} must be blank or between $0 and ${CAP_MAX_USD}.", detail={"field": name, "max": str(CAP_MAX_USD)}
        )
    return amount.quantize(Decimal("0.01"))


def spend_caps_set(*, user: Any, caps: dict[str, Any]) -> UserLimits:
    """Set the caps named in `caps` (`daily_cap_usd`, `monthly_cap_usd`: an amount in USD,
    or None / "" for no cap); the others are left as they are.

    Side effect: creates the user's UserLimits row when missing. The operator's limits
    on it are never touched here. Raises InvalidLimits (400) for an unknown field or a
    negative, non-numeric or absurd amount; nothing is saved then.
    """
    unknown = sorted(set(caps) - set(CAP_FIELDS))
    if unknown:
        raise InvalidLimits(f"Unknown field(s): {', '.join(unknown)}.", detail={"fields": unknown})
    values = {name: _cap(name, value) for name, value in caps.items()}
    limits, _ = UserLimits.objects.get_or_create(user=user)
    if values:
        for name, value in values.items():
            setattr(limits, name, value)
        limits.save(update_fields=[*values, "updated_at"])
    return limits
