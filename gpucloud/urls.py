from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gpucloud.metrics import metrics_view

admin.site.site_header = "GPU Cloud operations"
admin.site.site_title = "GPU Cloud"
admin.site.index_title = "Hosts, GPUs, instances and billing"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/gpu/", include("instances.urls")),
    path("api/billing/", include("billing.urls")),
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api-auth/", include("rest_framework.urls")),
    path("accounts/", include("allauth.urls")),
    path("billing/", include("billing.web_urls")),
    path("", include("instances.web_urls")),
]
