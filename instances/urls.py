"""Routes of the customer API, mounted at /api/gpu/ (paths of the issue, no trailing slashes)."""

from __future__ import annotations

from django.urls import path, re_path

from instances.api import instances, keys, storage
from instances.api.common import NotARoute
from templates_app.api import TemplateDetailApi, TemplateListApi

app_name = "api"

urlpatterns = [
    path("instances", instances.InstanceListApi.as_view(), name="instances"),
    path("instances/<str:id>", instances.InstanceDetailApi.as_view(), name="instance"),
    path("instances/<str:id>/stop", instances.InstanceStopApi.as_view(), name="instance-stop"),
    path("instances/<str:id>/start", instances.InstanceStartApi.as_view(), name="instance-start"),
    path("instances/<str:id>/restart", instances.InstanceRestartApi.as_view(), name="instance-restart"),
    path("instances/<str:id>/resize", storage.InstanceResizeApi.as_view(), name="instance-resize"),
    path("instances/<str:id>/events", instances.InstanceEventsApi.as_view(), name="instance-events"),
    path("instances/<str:id>/logs", instances.InstanceLogsApi.as_view(), name="instance-logs"),
    path("availability", instances.AvailabilityApi.as_view(), name="availability"),
    path("ssh-keys", keys.SSHKeyListApi.as_view(), name="ssh-keys"),
    path("ssh-keys/<path:key_id>", keys.SSHKeyDetailApi.as_view(), name="ssh-key"),
    path("tokens", keys.TokenListApi.as_view(), name="tokens"),
    path("tokens/<str:token_id>", keys.TokenDetailApi.as_view(), name="token"),
    path("templates", TemplateListApi.as_view(), name="templates"),
    path("templates/<str:slug>", TemplateDetailApi.as_view(), name="template"),
    re_path(r"", NotARoute.as_view()),
]
