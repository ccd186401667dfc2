"""Errors of the billing app: each has a stable `code` and an HTTP `status`.

The API's exception handler renders anything carrying `code`, `message`, `status` and
`detail`; instances' admission path re-raises these unchanged.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class BillingError(Exception):
    code = "billing:error"
    status = HTTPStatus.BAD_REQUEST
    default_message = "The billing request could not be carried out."

    def __init__(self, message: str | None = None, *, detail: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.detail = detail or {}
        super().__init__(self.message)


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
