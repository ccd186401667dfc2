"""The product's URLs plus `/bench/minimal`, the baseline of bench/api.py, and
`/bench/authenticated`, a token-authenticated DRF view that does nothing."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gpucloud.urls import urlpatterns as product_urlpatterns


def minimal(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


class Authenticated(APIView):
    """The API's floor: the same authentication (token) and permission as every API
    view, rendered by DRF, with no work of its own."""

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


urlpatterns = [
    path("bench/minimal", minimal),
    path("bench/authenticated", Authenticated.as_view()),
    *product_urlpatterns,
]
