"""What every view of the instances API shares: the token scheme in the schema, and a
404 in the one error shape for paths that are no route."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "instances.access.authentication.ApiTokenAuthentication"
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

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        raise NotFound("No such API route.")

    get = post = put = patch = delete = head = options = http_method_not_allowed
