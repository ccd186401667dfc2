"""Errors of the billing app: each has a stable `code` and an HTTP `status`.

All subclass gpucloud.errors.DomainError; instances' admission path re-raises these
unchanged, and the API's exception handler renders them.
"""

from __future__ import annotations

from http import HTTPStatus

from gpucloud.errors import DomainError


class BillingError(DomainError):
    code = "billing:error"
    default_message = "The billing request could not be carried out."


class InsufficientBalance(BillingError):
    code = "billing:insufficient-balance"
    status = HTTPStatus.PAYMENT_REQUIRED
    default_message = "Your balance does not cover the minimum run time. Top up to continue."


class InvalidTopupAmount(BillingError):
    code = "billing:invalid-amount"
    default_message = "The top-up amount is out of bounds."


class InvalidMonth(BillingError):
    code = "billing:invalid-month"
    default_message = "month must be YYYY-MM."


class InvalidAdjustment(BillingError):
    code = "billing:invalid-adjustment"
    default_message = "An adjustment needs a non-zero amount and a reason."


class PaymentProviderError(BillingError):
    """Stripe refused or could not be reached; the message never carries keys or secrets."""

    code = "billing:payment-provider-error"
    status = HTTPStatus.BAD_GATEWAY
    default_message = "The payment provider could not be reached. Try again shortly."


class TopupNotFound(BillingError):
    code = "billing:topup-not-found"
    status = HTTPStatus.NOT_FOUND
    default_message = "No such top-up."


class LimitReached(BillingError):
    """A per-user limit (billing.models.UserLimits or the GPUCLOUD_LIMIT_* settings)
    refuses a launch or start: the user must release something or ask the operator."""

    code = "billing:limit"
    status = HTTPStatus.CONFLICT
    default_message = "This would exceed a limit on your account."


class LimitInstances(LimitReached):
    code = "billing:limit-instances"
    default_message = "You hold as many instances as your account allows."


class LimitGpus(LimitReached):
    code = "billing:limit-gpus"
    default_message = "You hold as many GPUs as your account allows."


class LimitSpend(LimitReached):
    code = "billing:limit-spend"
    default_message = "This would exceed the hourly spend your account allows."


class SpendCapReached(LimitReached):
    """The customer's own daily or monthly cap (UserLimits.daily_cap_usd/monthly_cap_usd)."""

    code = "billing:spend-cap-reached"
    default_message = "Your spend cap is reached; raise it on the billing page to launch."


class InvalidLimits(BillingError):
    code = "billing:invalid-limits"
    default_message = "A spend cap must be blank or a non-negative amount in USD."
