"""Customer web pages (mounted at /)."""

from __future__ import annotations

from django.urls import path

from instances import views

app_name = "web"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("launch/", views.launch, name="launch"),
    path("instances/<str:public_id>/", views.instance_detail, name="instance"),
    path("instances/<str:public_id>/logs/", views.instance_logs, name="instance-logs"),
    path("instances/<str:public_id>/credentials/", views.instance_credentials, name="instance-credentials"),
    path("instances/<str:public_id>/resize/", views.instance_resize, name="instance-resize"),
    path("instances/<str:public_id>/<str:action>/", views.instance_action, name="instance-action"),
    path("ssh-keys/", views.ssh_keys, name="ssh-keys"),
    path("ssh-keys/<int:key_id>/delete/", views.ssh_key_delete, name="ssh-key-delete"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
]
