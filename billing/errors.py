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
