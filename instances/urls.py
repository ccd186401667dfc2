"""Routes of the customer API, mounted at /api/gpu/ (paths of the issue, no trailing slashes)."""

from __future__ import annotations

from django.urls import path, re_path

from instances.api import idle, instances, keys, notify, snapshots, start, storage, waitlist
from instances.api.common import NotARoute
from templates_app.api import TemplateDetailApi, TemplateListApi

app_name = "api"

urlpatterns = [
    path("instances", instances.InstanceListApi.as_view(), name="instances"),
    path("instances/<str:id>", instances.InstanceDetailApi.as_view(), name="instance"),
    path("instances/<str:id>/stop", instances.InstanceStopApi.as_view(), name="instance-stop"),
    path("instances/<str:id>/start", start.InstanceStartApi.as_view(), name="instance-start"),
    path("instances/<str:id>/restart", instances.InstanceRestartApi.as_view(), name="instance-restart"),
    path("instances/<str:id>/resize", storage.InstanceResizeApi.as_view(), name="instance-resize"),
    path("instances/<str:id>/snapshot", snapshots.InstanceSnapshotApi.as_view(), name="instance-snapshot"),
    path("instances/<str:id>/restore", snapshots.InstanceRestoreApi.as_view(), name="instance-restore"),
    path("snapshots", snapshots.SnapshotListApi.as_view(), name="snapshots"),
    path("snapshots/<str:id>", snapshots.SnapshotDetailApi.as_view(), name="snapshot"),
    path("instances/<str:id>/events", instances.InstanceEventsApi.as_view(), name="instance-events"),
    path("instances/<str:id>/logs", instances.InstanceLogsApi.as_view(), name="instance-logs"),
    path("instances/<str:id>/idle", idle.InstanceIdleApi.as_view(), name="instance-idle"),
    path("instances/<str:id>/keep-alive", idle.InstanceKeepAliveApi.as_view(), name="instance-keep-alive"),
    path("webhooks", notify.WebhookListApi.as_view(), name="webhooks"),
    path("webhooks/<int:webhook_id>", notify.WebhookDetailApi.as_view(), name="webhook"),
    path("webhook-deliveries", notify.DeliveryListApi.as_view(), name="webhook-deliveries"),
    path(
        "webhook-deliveries/<int:delivery_id>/replay",
        notify.DeliveryReplayApi.as_view(),
        name="webhook-delivery-replay",
    ),
    path("notification-preferences", notify.PreferencesApi.as_view(), name="notification-preferences"),
    path("waitlist", waitlist.WaitlistListApi.as_view(), name="waitlist"),
    path("waitlist/<str:id>", waitlist.WaitlistDetailApi.as_view(), name="waitlist-entry"),
    path("availability", instances.AvailabilityApi.as_view(), name="availability"),
    path("ssh-keys", keys.SSHKeyListApi.as_view(), name="ssh-keys"),
    path("ssh-keys/<path:key_id>", keys.SSHKeyDetailApi.as_view(), name="ssh-key"),
    path("tokens", keys.TokenListApi.as_view(), name="tokens"),
    path("tokens/<str:token_id>", keys.TokenDetailApi.as_view(), name="token"),
    path("templates", TemplateListApi.as_view(), name="templates"),
    path("templates/<str:slug>", TemplateDetailApi.as_view(), name="template"),
    re_path(r"", NotARoute.as_view()),
]
