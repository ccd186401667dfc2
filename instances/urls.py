"""Routes of the customer API, mounted at /api/gpu/ (paths of the issue, no trailing slashes)."""

from __future__ import annotations

from django.urls import path

from instances.api import keys
from templates_app.api import TemplateDetailApi, TemplateListApi

app_name = "api"

urlpatterns = [
    path("ssh-keys", keys.SSHKeyListApi.as_view(), name="ssh-keys"),
    path("ssh-keys/<path:key_id>", keys.SSHKeyDetailApi.as_view(), name="ssh-key"),
    path("tokens", keys.TokenListApi.as_view(), name="tokens"),
    path("tokens/<str:token_id>", keys.TokenDetailApi.as_view(), name="token"),
    path("templates", TemplateListApi.as_view(), name="templates"),
    path("templates/<slug:slug>", TemplateDetailApi.as_view(), name="template"),
]
