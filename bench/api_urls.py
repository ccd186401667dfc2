"""The product's URLs plus `/bench/minimal`, the baseline of bench/api.py."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from gpucloud.urls import urlpatterns as product_urlpatterns


def minimal(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/minimal", minimal), *product_urlpatterns]
