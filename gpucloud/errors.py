"""The one error base of the project, and the one shape every API error has.

A leaf module: it imports nothing of the project, so every app may import it (the only
module of `gpucloud/` an app imports). Each app subclasses DomainError in its own
`errors.py`; the API's exception handler (gpucloud.exceptions) and the web views
recognise them with `isinstance`.

    {"error": {"code": "instances:no-gpu-available", "message": "...", "detail": {...}}}
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers


class DomainError(Exception):
    """A refusal a client can act on: a stable `code`, an HTTP `status`, a `message`
    for people and a free-form `detail` for programs. Subclasses set the defaults."""

    code: str = "error"
    status: int = HTTPStatus.BAD_REQUEST
    default_message: str = "The request could not be carried out."

    def __init__(self, message: str | None = None, *, detail: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.detail = detail or {}
        super().__init__(self.message)


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail or {}}}


ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorBody",
            fields={
                "code": serializers.CharField(help_text="Stable, e.g. `instances:no-gpu-available`."),
                "message": serializers.CharField(),
                "detail": serializers.DictField(help_text="Free-form; field errors for 400s."),
            },
        )
    },
)

_STATUS_TEXT = {
    400: "Invalid input",
    401: "Not authenticated",
    402: "Balance too low",
    403: "Not allowed",
    404: "Not found (or not yours)",
    409: "State conflict or no capacity",
    429: "Throttled (see Retry-After)",
    502: "The container failed",
    503: "The host is unavailable",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error statuses an operation may answer (always 401, 403, 429)."""
    codes = sorted({401, 403, 429, *statuses})
    return {code: OpenApiResponse(ErrorSerializer, description=_STATUS_TEXT.get(code, "")) for code in codes}
