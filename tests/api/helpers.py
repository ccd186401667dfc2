"""API test helpers: a client authenticated with a real token, a launch through the service."""

from __future__ import annotations

from rest_framework.test import APIClient

from instances import services
from instances.access.tokens import token_create
from instances.models import Instance


def token_client(user) -> APIClient:
    _, key = token_create(user=user, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def launch(user, **overrides) -> Instance:
    """A launch through the service, as the API's would be (no worker takes it here)."""
    fields = {"template": "test-sshd", "gpu_type": "rtx-5090", "storage_gb": 20, "access": ["ssh", "jupyter"]}
    return services.instance_launch(user=user, **{**fields, **overrides})
