"""Customer web pages (mounted at /)."""

from __future__ import annotations

from django.urls import path

from instances import idle_views, snapshot_views, views
from instances.notify import views as notify_views

app_name = "web"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("launch/", views.launch, name="launch"),
    path("instances/<str:public_id>/", views.instance_detail, name="instance"),
    path("instances/<str:public_id>/logs/", views.instance_logs, name="instance-logs"),
    path("instances/<str:public_id>/credentials/", views.instance_credentials, name="instance-credentials"),
    path("instances/<str:public_id>/keep-alive/", idle_views.instance_keep_alive, name="instance-keep-alive"),
    path("instances/<str:public_id>/idle/", idle_views.instance_idle, name="instance-idle"),
    path("instances/<str:public_id>/resize/", views.instance_resize, name="instance-resize"),
    path("instances/<str:public_id>/snapshots/", snapshot_views.instance_snapshots, name="instance-snapshots"),
    path("instances/<str:public_id>/snapshot/", snapshot_views.instance_snapshot, name="instance-snapshot"),
    path("instances/<str:public_id>/restore/", snapshot_views.instance_restore, name="instance-restore"),
    path("instances/<str:public_id>/destroy-keep/", snapshot_views.instance_destroy_keep, name="instance-destroy-keep"),
    path("snapshots/<str:snapshot_id>/delete/", snapshot_views.snapshot_remove, name="snapshot-delete"),
    path("instances/<str:public_id>/<str:action>/", views.instance_action, name="instance-action"),
    path("waitlist/<str:public_id>/cancel/", views.waitlist_cancel, name="waitlist-cancel"),
    path("ssh-keys/", views.ssh_keys, name="ssh-keys"),
    path("ssh-keys/<int:key_id>/delete/", views.ssh_key_delete, name="ssh-key-delete"),
    path("tokens/", views.tokens, name="tokens"),
    path("notifications/", notify_views.notifications, name="notifications"),
    path("notifications/webhooks/<int:endpoint_id>/delete/", notify_views.webhook_delete, name="webhook-delete"),
    path("notifications/deliveries/<int:delivery_id>/replay/", notify_views.delivery_replay, name="delivery-replay"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
]
