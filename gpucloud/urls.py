from __future__ import annotations

from django.contrib import admin
from django.urls import path

admin.site.site_header = "GPU Cloud operations"
admin.site.site_title = "GPU Cloud"
admin.site.index_title = "Hosts, GPUs, instances and billing"

urlpatterns = [
    path("admin/", admin.site.urls),
]
