"""What every API view shares: the error shape in the schema, and error responses."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

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


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error statuses an operation may answer (always 401 and 429)."""
    text = {
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
    codes = sorted({401, 403, 429, *statuses})
    return {code: OpenApiResponse(ErrorSerializer, description=text.get(code, "")) for code in codes}


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "instances.auth.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` (or `Bearer <key>`). Make one with `manage.py create_api_token`.",
        }


class NotARoute(APIView):
    """Any other path under /api/gpu/: a 404 in the one error shape, not Django's HTML page."""

    schema = None  # not an operation of the API
    authentication_classes = ()
    permission_classes = ()

    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise NotFound("No such API route.")

    get = post = put = patch = delete = head = options = http_method_not_allowed
