"""Request body parsers of the API, bounded, so a hostile body is a 4xx in the error shape.

DRF hands its own JSON and form parsers `request.body`, whose size check
(DATA_UPLOAD_MAX_MEMORY_SIZE) raises Django's RequestDataTooBig outside any parser:
Django's HTML 400 page, not our error shape; and its JSONParser lets Python's
RecursionError out of a deeply nested document (a 500). These parsers read the stream
themselves, at most the limit: a body over it is a 413 and JSON that Python cannot
parse is a 400, both rendered by the one exception handler. The multipart parser's own
size errors become the same 413.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import QueryDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class RequestTooLarge(ParseError):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def _limit() -> int:
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440


def _read(stream: Any) -> bytes:
    limit = _limit()
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
    return raw


class JSONParser(parsers.BaseParser):
    """DRF's JSONParser, reading at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes."""

    media_type = "application/json"
    renderer_class = parsers.JSONParser.renderer_class

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = _read(stream)
        try:
            return json.loads(raw.decode(encoding), parse_constant=self._refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc

    @staticmethod
    def _refuse_constant(name: str) -> Any:
        # NaN and Infinity are not JSON (DRF's STRICT_JSON default).
        raise ValueError(f"{name} is not a valid JSON value")


class FormParser(parsers.BaseParser):
    """DRF's FormParser, reading at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes."""

    media_type = "application/x-www-form-urlencoded"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return QueryDict(_read(stream), encoding=encoding)
        except TooManyFieldsSent as exc:
            raise RequestTooLarge("Too many form fields.") from exc


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except (RequestDataTooBig, TooManyFieldsSent) as exc:
            raise RequestTooLarge() from exc
