"""What does not need a registry: progress arithmetic, registry names, the admin form."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.urls import reverse

from instances.access.crypto import decrypt, encrypt
from instances.host.images import PullProgress, size_text
from instances.registries import registry_auth_for, registry_of
from instances.registry_models import RegistryCredential
from tests.factories import TemplateFactory


def test_the_size_reads_in_gigabytes_above_one_and_megabytes_below():
    assert size_text(done=2_100_000_000, total=7_900_000_000) == "2.1 of 7.9 GB"
    assert size_text(done=120_000_000, total=245_000_000) == "120 of 245 MB"


def test_progress_sums_the_layers_the_engine_has_sized_and_ignores_present_ones():
    progress = PullProgress()
    assert not progress.add({"status": "Pulling from gpucloud/x", "id": "latest"})
    assert not progress.add({"status": "Already exists", "id": "aaa"})
    assert progress.add(
        {"status": "Downloading", "id": "bbb", "progressDetail": {"current": 1_000_000, "total": 3_000_000_000}}
    )
    assert progress.add(
        {"status": "Downloading", "id": "ccc", "progressDetail": {"current": 0, "total": 4_900_000_000}}
    )
    assert progress.text() == "pulling 0.0 of 7.9 GB"
    assert progress.add({"status": "Download complete", "id": "bbb"})
    assert progress.text() == "pulling 3.0 of 7.9 GB"
    assert not progress.add({"status": "Pull complete", "id": "bbb"})  # counted once
    assert progress.data() == {
        "done_bytes": 3_000_000_000,
        "total_bytes": 7_900_000_000,
        "layers": 3,
        "layers_present": 1,
    }


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("pytorch/pytorch:2.5", "docker.io"),
        ("ubuntu", "docker.io"),
        ("registry.example.com/ml/pytorch:2.5", "registry.example.com"),
        ("127.0.0.1:5000/gpucloud/base:1", "127.0.0.1:5000"),
        ("localhost/base", "localhost"),
    ],
)
def test_the_registry_of_an_image_is_read_as_docker_reads_it(image, registry):
    assert registry_of(image) == registry


@pytest.mark.django_db
def test_a_templates_own_login_wins_over_its_registrys():
    template = TemplateFactory(slug="private", image="registry.example.com/ml/private:1")
    assert registry_auth_for(template=template) is None
    RegistryCredential.objects.create(registry="registry.example.com", username="ops", password_encrypted=encrypt("r"))
    assert registry_auth_for(template=template) == {
        "username": "ops", "password": "r", "serveraddress": "registry.example.com"
    }  # fmt: skip
    RegistryCredential.objects.create(template=template, username="bot", password_encrypted=encrypt("t"))
    assert registry_auth_for(template=template)["username"] == "bot"


@pytest.mark.django_db
def test_an_operator_sets_a_registry_password_that_is_stored_encrypted_and_never_shown(client, olga):
    client.force_login(olga)
    add = reverse("admin:instances_registrycredential_add")
    response = client.post(add, {"registry": "registry.example.com", "username": "ops", "password": "s3cret-token"})
    assert response.status_code == HTTPStatus.FOUND, response.content
    credential = RegistryCredential.objects.get()
    assert "s3cret-token" not in credential.password_encrypted
    assert decrypt(credential.password_encrypted) == "s3cret-token"
    change = reverse("admin:instances_registrycredential_change", args=[credential.pk])
    assert b"s3cret-token" not in client.get(change).content
    # Saved again without a password: the stored one stays.
    response = client.post(change, {"registry": "registry.example.com", "username": "ops2", "password": ""})
    assert response.status_code == HTTPStatus.FOUND
    credential.refresh_from_db()
    assert (credential.username, decrypt(credential.password_encrypted)) == ("ops2", "s3cret-token")
    # Neither a registry nor a template: refused, nothing written.
    response = client.post(add, {"registry": "", "username": "x", "password": "y"})
    assert response.status_code == HTTPStatus.OK
    assert RegistryCredential.objects.count() == 1
