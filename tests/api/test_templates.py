"""The catalog: customers read enabled entries; staff add, edit, disable and delete."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from templates_app.catalog import CATALOG
from templates_app.models import Template
from tests.factories import InstanceFactory, TemplateFactory

NEW = {
    "slug": "jax",
    "name": "JAX",
    "category": "framework",
    "image": "gpucloud/jax:latest",
    "ports": [{"name": "ssh", "port": 22, "protocol": "tcp"}],
    "access_methods": ["ssh"],
    "cap_add": ["CHOWN", "SETUID"],
}


@pytest.fixture(autouse=True)
def catalog(db):
    """The seeded catalog (a transactional test's flush removes seeded rows)."""
    for entry in CATALOG:
        Template.objects.get_or_create(slug=entry["slug"], defaults={k: v for k, v in entry.items() if k != "slug"})


def test_customers_see_enabled_templates_only(alice_api):
    Template.objects.filter(slug="base-cuda").update(enabled=False)
    slugs = {t["slug"] for t in alice_api.get("/api/gpu/templates?limit=100").json()["results"]}
    assert "pytorch" in slugs
    assert "base-cuda" not in slugs
    assert alice_api.get("/api/gpu/templates/base-cuda").status_code == HTTPStatus.NOT_FOUND
    body = alice_api.get("/api/gpu/templates/pytorch").json()
    assert {"ssh", "jupyter"} <= set(body["access_methods"])


def test_customers_cannot_write_the_catalog(alice_api):
    assert alice_api.post("/api/gpu/templates", NEW, format="json").status_code == HTTPStatus.FORBIDDEN
    response = alice_api.patch("/api/gpu/templates/pytorch", {"image": "evil/miner"}, format="json")
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json()["error"]["code"] == "auth:permission-denied"
    assert alice_api.delete("/api/gpu/templates/pytorch").status_code == HTTPStatus.FORBIDDEN
    assert Template.objects.get(slug="pytorch").image != "evil/miner"
    assert not Template.objects.filter(slug="jax").exists()


def test_staff_add_edit_and_delete_templates(olga_api):
    created = olga_api.post("/api/gpu/templates", NEW, format="json")
    assert created.status_code == HTTPStatus.CREATED, created.content
    patched = olga_api.patch("/api/gpu/templates/jax", {"enabled": False, "sort_order": 5}, format="json")
    assert patched.status_code == HTTPStatus.OK
    assert Template.objects.get(slug="jax").enabled is False
    # Staff still see a disabled template.
    assert olga_api.get("/api/gpu/templates/jax").status_code == HTTPStatus.OK
    assert olga_api.delete("/api/gpu/templates/jax").status_code == HTTPStatus.NO_CONTENT
    assert not Template.objects.filter(slug="jax").exists()


def test_staff_cannot_grant_dangerous_capabilities_or_bad_ports(olga_api):
    response = olga_api.post("/api/gpu/templates", {**NEW, "cap_add": ["SYS_ADMIN"]}, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "cap_add" in response.json()["error"]["detail"]
    bad_ports = [{"name": "ssh", "port": 22, "protocol": "tcp"}, {"name": "ssh", "port": 70000, "protocol": "udp"}]
    response = olga_api.post("/api/gpu/templates", {**NEW, "ports": bad_ports}, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not Template.objects.filter(slug="jax").exists()


def test_a_template_in_use_cannot_be_deleted(olga_api, alice, gpu_types):
    template = TemplateFactory()
    InstanceFactory(owner=alice, template=template, gpu_type=gpu_types["rtx-5090"])
    response = olga_api.delete(f"/api/gpu/templates/{template.slug}")
    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["error"]["code"] == "templates:in-use"
    assert Template.objects.filter(slug=template.slug).exists()
