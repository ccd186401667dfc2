"""The one API exception handler: every error has the shape of STYLE.md.

`{"error": {"code": "...", "message": "...", "detail": {...}}}`. Every app's errors
subclass gpucloud.errors.DomainError and are rendered here; DRF's own exceptions get
stable codes too.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from gpucloud.errors import DomainError, error_body

_DRF_CODES = {
    exceptions.NotAuthenticated: "auth:not-authenticated",
    exceptions.AuthenticationFailed: "auth:authentication-failed",
    exceptions.PermissionDenied: "auth:permission-denied",
    exceptions.NotFound: "not-found",
    exceptions.MethodNotAllowed: "method-not-allowed",
    exceptions.NotAcceptable: "not-acceptable",
    exceptions.UnsupportedMediaType: "unsupported-media-type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "invalid-request",
    exceptions.ValidationError: "invalid-request",
}


logger = logging.getLogger(__name__)

# Redis (the cache behind throttles and locks, and the Celery broker) unreachable: a
# clear 503 with a stable code instead of a bare 500 (docs/reliability.md).
_BACKING_SERVICE_DOWN = (RedisConnectionError, RedisTimeoutError, BrokerError)
RETRY_AFTER_SECONDS = 5


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, _BACKING_SERVICE_DOWN):
        logger.warning("API request refused: Redis is unreachable (%s)", type(exc).__name__)
        return Response(
            error_body(
                "service-unavailable",
                "A service the API depends on (Redis) is unreachable. Try again shortly.",
                {"retry_after_seconds": RETRY_AFTER_SECONDS},
            ),
            status=HTTPStatus.SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DomainError):
        retry_after = exc.detail.get("retry_after_seconds")
        headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else None
        return Response(error_body(exc.code, exc.message, exc.detail), status=exc.status, headers=headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        message = "The request is not valid."
        detail = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
    else:
        message = str(getattr(exc, "detail", "")) or HTTPStatus(response.status_code).phrase
        detail = {}
        wait = getattr(exc, "wait", None) if isinstance(exc, exceptions.Throttled) else None
        if wait is not None:
            detail = {"retry_after_seconds": int(wait)}
    response.data = error_body(code, message, detail)
    return response
