"""Errors of notifications (stable codes, rendered by the one exception handler)."""

from __future__ import annotations

from http import HTTPStatus

from gpucloud.errors import DomainError


class InvalidWebhook(DomainError):
    code = "notify:invalid-webhook-url"
    default_message = "That webhook URL is not allowed."


class TooManyWebhooks(DomainError):
    code = "notify:too-many-webhooks"
    status = HTTPStatus.CONFLICT
    default_message = "You have registered the most webhook URLs allowed."


class InvalidPreference(DomainError):
    code = "notify:invalid-preference"
    default_message = "Unknown event or channel."


class NotFound(DomainError):
    code = "notify:not-found"
    status = HTTPStatus.NOT_FOUND
    default_message = "No such webhook or delivery."
