"""Which registry an image comes from, and the login a worker pulls it with."""

from __future__ import annotations

from instances.access.crypto import decrypt
from instances.registry_models import RegistryCredential
from templates_app.models import Template

DOCKER_HUB = "docker.io"


def registry_of(image: str) -> str:
    """The registry host of an image reference, as Docker reads it: the first path
    component when it has a dot or a port or is `localhost`, else Docker Hub."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def registry_auth_for(*, template: Template) -> dict[str, str] | None:
    """The engine's `auth_config` for pulling the template's image, or None (anonymous).

    The template's own credential first, else its registry's.
    """
    credential = RegistryCredential.objects.filter(template=template).first()
    if credential is None:
        credential = RegistryCredential.objects.filter(
            template__isnull=True, registry=registry_of(template.image)
        ).first()
    if credential is None:
        return None
    return {
        "username": credential.username,
        "password": decrypt(credential.password_encrypted),
        "serveraddress": credential.registry or registry_of(template.image),
    }
