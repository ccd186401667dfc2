"""Bob walks every route against alice's instance, SSH key and token: 404 each time, nothing changed."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.forms.models import model_to_dict

from instances import services
from instances.access.sshkeys import sshkey_create
from instances.access.tokens import token_create
from instances.models import ApiToken, Instance, InstanceEvent, PortBinding, SSHKey
from tests.api.keygen import ed25519_pub
from tests.factories import TemplateFactory


@pytest.fixture
def alices_things(alice, this_host):
    TemplateFactory()
    instance = services.instance_launch(
        user=alice, template="test-sshd", gpu_type="rtx-5090", storage_gb=20, access=["ssh"]
    )
    # Running, as a worker would leave it, so every action would be allowed to its owner.
    Instance.objects.filter(pk=instance.pk).update(status="running")
    key = sshkey_create(user=alice, public_key=ed25519_pub("alice"))
    token, _ = token_create(user=alice, name="alice's")
    return instance, key, token


def _snapshot(instance: Instance) -> tuple:
    return (
        model_to_dict(Instance.objects.get(pk=instance.pk)),
        Instance.objects.get(pk=instance.pk).updated_at,
        list(InstanceEvent.objects.filter(instance=instance).values_list("id", flat=True)),
        list(PortBinding.objects.filter(instance=instance).values_list("host_port", flat=True)),
        list(SSHKey.objects.values_list("id", "name", "fingerprint")),
        list(ApiToken.objects.values_list("id", "revoked_at")),
    )


def test_bob_gets_404_on_every_route_and_changes_nothing(bob_api, alices_things):
    instance, key, token = alices_things
    base = f"/api/gpu/instances/{instance.public_id}"
    routes = [
        ("get", base),
        ("delete", base),
        ("post", f"{base}/stop"),
        ("post", f"{base}/start"),
        ("post", f"{base}/restart"),
        ("get", f"{base}/events"),
        ("get", f"{base}/logs"),
        ("get", f"/api/gpu/ssh-keys/{key.id}"),
        ("delete", f"/api/gpu/ssh-keys/{key.id}"),
        ("get", f"/api/gpu/ssh-keys/{key.fingerprint}"),
        ("delete", f"/api/gpu/ssh-keys/{key.fingerprint}"),
        ("delete", f"/api/gpu/ssh-keys?id={key.id}"),
        ("delete", f"/api/gpu/tokens/{token.id}"),
    ]
    before = _snapshot(instance)
    for method, path in routes:
        response = getattr(bob_api, method)(path)
        assert response.status_code == HTTPStatus.NOT_FOUND, (method, path, response.status_code)
        assert response.json()["error"]["code"] == "instances:not-found", (method, path)
    # Nor do bob's lists show any of it.
    assert bob_api.get("/api/gpu/instances").json()["count"] == 0
    assert bob_api.get("/api/gpu/ssh-keys").json()["count"] == 0
    assert [t["name"] for t in bob_api.get("/api/gpu/tokens").json()["results"]] == ["test"]
    assert _snapshot(instance) == before


def test_bob_cannot_launch_with_alices_saved_key(bob_api, alices_things):
    _, key, _ = alices_things
    body = {"template": "test-sshd", "gpu": "rtx-pro-6000", "storage": 20, "ssh_keys": [str(key.id)]}
    response = bob_api.post("/api/gpu/instances", body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == "instances:invalid-ssh-key"
    assert Instance.objects.count() == 1
