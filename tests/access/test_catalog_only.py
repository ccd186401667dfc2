"""Only catalog templates can be launched: a customer never names an image, a command
or capabilities; an operator adds templates (the staff API and admin, tested there)."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from rest_framework.test import APIClient

from instances.models import Instance
from tests.factories import TemplateFactory


@pytest.fixture
def alice_api(alice) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.fixture
def catalog(db):
    return TemplateFactory(slug="pytorch", name="PyTorch", image="gpucloud/pytorch:2-cuda12")


def _launch(client: APIClient, **body):
    body = {"template": "pytorch", "gpu": "rtx-5090", "storage": 20, "access": ["ssh"], **body}
    return client.post("/api/gpu/instances", body, format="json")


def test_an_image_reference_is_not_a_template(alice_api, this_host, catalog):
    for reference in ("evil/miner:latest", "docker.io/library/alpine", "gpucloud/pytorch:2-cuda12"):
        response = _launch(alice_api, template=reference)

        assert response.status_code == HTTPStatus.BAD_REQUEST
        assert response.json()["error"]["code"] == "instances:unknown-template"
    assert not Instance.objects.exists()


def test_image_command_and_capabilities_in_the_request_are_ignored(alice_api, this_host, catalog):
    response = _launch(
        alice_api,
        image="evil/miner:latest",
        command=["/bin/sh", "-c", "mine"],
        cap_add=["SYS_ADMIN"],
        privileged=True,
    )

    assert response.status_code == HTTPStatus.ACCEPTED, response.json()
    instance = Instance.objects.get(public_id=response.json()["id"])
    assert instance.template == catalog
    assert instance.template.image == "gpucloud/pytorch:2-cuda12"
    assert instance.template.command == []
    assert "SYS_ADMIN" not in instance.template.cap_add
    assert "evil" not in repr(instance.env)


def test_a_disabled_template_cannot_be_launched(alice_api, this_host, catalog):
    catalog.enabled = False
    catalog.save()

    response = _launch(alice_api)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == "instances:unknown-template"
