"""Credentials of the image registries the workers pull templates' images from, and
which catalog images each host holds."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from templates_app.models import Template


class RegistryCredential(models.Model):
    """A login to a registry, for one template's image or for every image of a registry.

    A template's own credential wins over its registry's. The password (or token) is a
    Fernet token (instances.access.crypto), set by operators in the admin, never shown.
    """

    registry = models.CharField(
        max_length=255,
        blank=True,
        help_text="host[:port] as in the image reference, e.g. registry.example.com:5000 "
        "(docker.io for Docker Hub); blank when the credential is for one template.",
    )
    template = models.OneToOneField(
        Template,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Only for this template's image.",
    )
    username = models.CharField(max_length=255)
    password_encrypted = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("registry", "id")
        constraints = [
            models.CheckConstraint(
                condition=~Q(registry="") | Q(template__isnull=False), name="registrycredential_registry_or_template"
            ),
            models.UniqueConstraint(
                fields=["registry"], condition=Q(template__isnull=True), name="registrycredential_one_per_registry"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.username}@{self.registry or self.template}"


class HostImage(models.Model):
    """A catalog image as one host's worker last saw it: present or not, its size, when
    an instance last started from it. Written by the worker (instances.services.warm)."""

    host = models.ForeignKey("instances.Host", on_delete=models.CASCADE, related_name="images")
    image = models.CharField(max_length=255)
    present = models.BooleanField(default=False)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="When an instance last started from it.")
    checked_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why the last warm pull failed.")

    class Meta:
        ordering = ("host", "image")
        constraints = [models.UniqueConstraint(fields=["host", "image"], name="hostimage_host_image_unique")]

    def __str__(self) -> str:
        return f"{self.host_id}:{self.image}"
