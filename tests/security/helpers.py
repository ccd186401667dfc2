"""What the security suites share besides fixtures."""

from __future__ import annotations

from django.conf import settings

from templates_app.catalog import CATALOG
from tests.factories import TemplateFactory

# Four simulated GPUs: two tenants, a bomber and a spare can run at once.
TENANT_GPUS = [
    {"index": 0, "name": "NVIDIA GeForce RTX 5090", "sku": "rtx-5090", "memory_mb": 32607},
    {"index": 1, "name": "NVIDIA GeForce RTX 5090", "sku": "rtx-5090", "memory_mb": 32607},
    {"index": 2, "name": "NVIDIA RTX PRO 6000 Blackwell", "sku": "rtx-pro-6000", "memory_mb": 97887},
    {"index": 3, "name": "NVIDIA RTX PRO 6000 Blackwell", "sku": "rtx-pro-6000", "memory_mb": 97887},
]


# What a container may be given on top of `--cap-drop ALL`: the catalog's and the test image's.
ALLOWED_CAPS = {cap for entry in CATALOG for cap in entry["cap_add"]} | set(TemplateFactory.cap_add.function())


def host_label() -> str:
    return f"label=gpucloud.host={settings.GPUCLOUD_HOST_NAME}"


# The control plane labels what it creates with the owner too; a stray container other
# suites plant by hand to test the reconciler (host and instance labels only) is not ours.
OWNER_LABEL = "label=gpucloud.owner"
