from __future__ import annotations

import os
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from instances.models import Gpu, GpuType, Host, Instance
from templates_app.models import Template

# GPUCLOUD_TEST_IMAGE: a branch that changes the test image builds and tests its own tag.
TEST_IMAGE = os.environ.get("GPUCLOUD_TEST_IMAGE", "gpucloud-test/sshd:latest")
# The same without code-server, 1.1 GB smaller (scripts/build-test-image tags both): what
# tests/registry.py pushes, so registry tests move a few hundred MB, not 1.6 GB.
TEST_IMAGE_SLIM = TEST_IMAGE + ("-slim" if ":" in TEST_IMAGE.rsplit("/", 1)[-1] else ":latest-slim")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct-horse-battery-staple")


class GpuTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GpuType
        django_get_or_create = ("sku",)

    sku = "rtx-5090"
    display_name = "RTX 5090"
    rate_per_hour = Decimal("1.49")
    memory_mb = 32607
    cpu_limit = Decimal("2")
    ram_limit_mb = 1024


class HostFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Host
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"host{n}")
    public_address = "127.0.0.1"
    bind_address = "127.0.0.1"
    port_range_start = 20000
    port_range_end = 29999


class GpuFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Gpu

    host = factory.SubFactory(HostFactory)
    index = factory.Sequence(lambda n: n)
    uuid = factory.Sequence(lambda n: f"GPU-SIM-test-{n:08d}")
    name = "NVIDIA GeForce RTX 5090"
    gpu_type = factory.SubFactory(GpuTypeFactory)
    memory_mb = 32607
    simulated = True


class TemplateFactory(factory.django.DjangoModelFactory):
    """The test image (scripts/build-test-image): sshd, JupyterLab on 8888, the web terminal on 7681."""

    class Meta:
        model = Template
        django_get_or_create = ("slug",)

    slug = "test-sshd"
    name = "Test sshd"
    category = Template.Category.BASE
    image = TEST_IMAGE
    ports = factory.LazyFunction(
        lambda: [{"name": "ssh", "port": 22, "protocol": "tcp"}, {"name": "jupyter", "port": 8888, "protocol": "http"}]
    )
    access_methods = factory.LazyFunction(lambda: ["ssh", "jupyter"])
    cap_add = factory.LazyFunction(
        lambda: ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "NET_BIND_SERVICE", "KILL"]
    )


class InstanceFactory(factory.django.DjangoModelFactory):
    """A bare row (no container): for tests of constraints, queries and billing."""

    class Meta:
        model = Instance

    owner = factory.SubFactory(UserFactory)
    template = factory.SubFactory(TemplateFactory)
    gpu_type = factory.SubFactory(GpuTypeFactory)
    status = Instance.Status.PENDING
    storage_gb = 20
