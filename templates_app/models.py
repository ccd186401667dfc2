from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models


class Template(models.Model):
    """A catalog entry: the only images a customer can launch."""

    class Category(models.TextChoices):
        FRAMEWORK = "framework", "ML framework"
        INFERENCE = "inference", "Inference server"
        IMAGE_GENERATION = "image-generation", "Image generation"
        BASE = "base", "Base image"

    class AccessMethod(models.TextChoices):
        SSH = "ssh", "SSH"
        JUPYTER = "jupyter", "JupyterLab"
        CODE_SERVER = "code-server", "code-server"
        TERMINAL = "terminal", "Web terminal"
        HTTP = "http", "Web UI"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    category = models.CharField(max_length=32, choices=Category.choices, default=Category.BASE)
    description = models.TextField(blank=True)
    image = models.CharField(max_length=255, help_text="Docker image reference, e.g. gpucloud/pytorch:2.5-cuda12")
    # [{"name": "ssh", "port": 22, "protocol": "tcp"}, {"name": "jupyter", "port": 8888, "protocol": "http"}]
    ports = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    command = models.JSONField(default=list, blank=True, help_text="Overrides the image's CMD when not empty.")
    access_methods = models.JSONField(default=list, blank=True)
    # Capabilities added back after cap_drop=ALL; every one is justified in the catalog docs.
    cap_add = models.JSONField(default=list, blank=True)
    min_gpu_memory_mb = models.PositiveIntegerField(default=0)
    volume_path = models.CharField(max_length=255, default="/workspace")
    # How the software starts (issue 13): vLLM and Forge load models for minutes before
    # their ports answer; PyTorch's DataLoader workers need more than Docker's 64 MB /dev/shm.
    ready_timeout_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(5), MaxValueValidator(3600)],
        help_text="How long a start waits for every port to answer (5-3600 s); blank: the host's default "
        "(GPUCLOUD_READY_TIMEOUT_SECONDS). The GPU is billed during the wait.",
    )
    health_path = models.CharField(
        max_length=255,
        blank=True,
        validators=[RegexValidator(r"^/[^\s]*$", "An absolute URL path, e.g. /health.")],
        help_text="For HTTP ports: a start is ready when a GET of this path answers below 500 (a login "
        "page counts), not merely when the port accepts; blank: the port accepting is enough.",
    )
    shm_size_mb = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(1024 * 1024)],
        help_text="Size of /dev/shm in MB; 0: half the GPU type's RAM limit.",
    )
    enabled = models.BooleanField(default=True)
    sort_order = models.PositiveSmallIntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("sort_order", "name")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(category__in=["framework", "inference", "image-generation", "base"]),
                name="template_category_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def port(self, name: str) -> dict | None:
        return next((p for p in self.ports if p.get("name") == name), None)
