"""The catalog: customers read enabled entries; staff add, edit, disable and delete."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.contrib.auth.models import Permission

from templates_app.catalog import CATALOG
from templates_app.models import Template
from tests.api.helpers import token_client
from tests.factories import InstanceFactory, TemplateFactory, UserFactory

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


def staff_with(username: str, *codenames: str):
    """A staff user holding only the named permissions of the catalog."""
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="templates_app", codename__in=codenames)
    )
    return token_client(user)


def test_staff_write_only_what_their_model_permissions_allow(db):
    editor = staff_with("sam", "view_template", "change_template")
    # Reads stay open; the edit they hold the permission for goes through.
    assert editor.get("/api/gpu/templates/pytorch").status_code == HTTPStatus.OK
    patched = editor.patch("/api/gpu/templates/pytorch", {"sort_order": 7}, format="json")
    assert patched.status_code == HTTPStatus.OK, patched.content
    # Adding and deleting need permissions they do not hold: 403 in the one error shape.
    for response in (
        editor.post("/api/gpu/templates", NEW, format="json"),
        editor.delete("/api/gpu/templates/pytorch"),
    ):
        assert response.status_code == HTTPStatus.FORBIDDEN
        assert response.json()["error"]["code"] == "auth:permission-denied"
    assert Template.objects.filter(slug="pytorch").exists()
    assert not Template.objects.filter(slug="jax").exists()

    # Staff with no catalog permission at all change nothing.
    bare = staff_with("sid")
    response = bare.patch("/api/gpu/templates/pytorch", {"image": "evil/miner"}, format="json")
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json()["error"]["code"] == "auth:permission-denied"
    assert Template.objects.get(slug="pytorch").image != "evil/miner"


HOSTILE = {
    "cap_add": [["ALL"], ["SYS_ADMIN"], ["CHOWN", "SYS_MODULE"], ["sys_admin"], ["CAP_SYS_ADMIN"]],
    "env": [
        {"LD_PRELOAD": "/workspace/evil.so"},
        {"ld_library_path": "/workspace"},
        {"PYTHONPATH": "/workspace"},
        {"PYTHONSTARTUP": "/workspace/x.py"},
        {"PERL5OPT": "-Mevil"},
        {"NODE_OPTIONS": "--require /workspace/x.js"},
        {"BASH_ENV": "/workspace/x.sh"},
        {"ENV": "/workspace/x.sh"},
        {"PROMPT_COMMAND": "curl evil"},
        {"GPUCLOUD_AUTHORIZED_KEYS": "ssh-ed25519 AAAA"},
        {"NVIDIA_VISIBLE_DEVICES": "all"},
        {"BAD NAME": "x"},
        {"HOME\n": "x"},  # a trailing newline is not part of a name
    ],
    "volume_path": ["workspace", "/workspace/../etc", "/", "/workspace:/host", "/a,b", "/a b"],
    "image": [
        "Evil/Miner",
        "--privileged",
        "gpucloud/pytorch latest",
        "gpucloud/pytorch:",
        "gpucloud//pytorch",
        "gpucloud/pytorch@sha256:abc",
        "UPPER",
        "",
    ],
}


@pytest.mark.parametrize(
    ("field", "value"), [(field, value) for field, values in HOSTILE.items() for value in values], ids=repr
)
def test_hostile_template_fields_are_refused_on_create_and_edit(olga_api, field, value):
    before = Template.objects.values().get(slug="pytorch")
    created = olga_api.post("/api/gpu/templates", {**NEW, field: value}, format="json")
    assert created.status_code == HTTPStatus.BAD_REQUEST, (field, value, created.content)
    assert field in created.json()["error"]["detail"]
    patched = olga_api.patch("/api/gpu/templates/pytorch", {field: value}, format="json")
    assert patched.status_code == HTTPStatus.BAD_REQUEST, (field, value, patched.content)
    assert field in patched.json()["error"]["detail"]
    assert not Template.objects.filter(slug="jax").exists()
    assert Template.objects.values().get(slug="pytorch") == before


@pytest.mark.parametrize(
    "image",
    [
        "gpucloud/jax:latest",
        "ubuntu",
        "127.0.0.1:5000/gpucloud-test/sshd:latest",
        "registry.example.com/team/jax_gpu-2:0.4.1-cuda12",
        "gpucloud/jax@sha256:" + "a" * 64,
        "localhost:5000/jax:1@sha256:" + "0" * 64,
    ],
)
def test_image_references_in_dockers_grammar_are_accepted(olga_api, image):
    body = {**NEW, "image": image, "env": {"JAX_PLATFORMS": "cuda", "HF_HOME": "/workspace/hf"}}
    response = olga_api.post("/api/gpu/templates", body, format="json")
    assert response.status_code == HTTPStatus.CREATED, response.content
    assert Template.objects.get(slug="jax").image == image
