"""Launches of images the host does not hold: pulled from a real registry on loopback
(tests/registry.py), with progress on the timeline, never billed, once per host."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from http import HTTPStatus

import pytest

from instances.access.crypto import decrypt, encrypt
from instances.models import GpuType, Instance, InstanceEvent, PortBinding
from instances.registry_models import HostImage, RegistryCredential
from tests.api.helpers import token_client
from tests.containers import labelled_containers, labelled_containers_remove
from tests.factories import TemplateFactory
from tests.registry import image_present, image_push_fresh, image_remove

pytestmark = [pytest.mark.docker, pytest.mark.celery]

Kind = InstanceEvent.Kind


@pytest.fixture(autouse=True)
def _no_containers_left() -> Iterator[None]:
    yield
    labelled_containers_remove()


@pytest.fixture
def api(celery_worker, alice, this_host):
    # The seeded type asks for 8 CPUs; this machine may have fewer.
    GpuType.objects.update(cpu_limit=1, ram_limit_mb=1024)
    return token_client(alice)


def _launch(api, *, template: str, wait: int = 120, gpu: str = "rtx-5090") -> dict:
    body = {"template": template, "gpu": gpu, "storage": 20, "access": ["ssh"]}
    response = api.post(f"/api/gpu/instances?wait={wait}", body, format="json")
    assert response.status_code in (HTTPStatus.ACCEPTED, HTTPStatus.CREATED), response.content
    return response.json()


def _settled(api, instance_id: str, seconds: float = 180) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        body = api.get(f"/api/gpu/instances/{instance_id}").json()
        if body["status"] in ("running", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def _pulling(instance_id: str) -> list[InstanceEvent]:
    return list(InstanceEvent.objects.filter(instance__public_id=instance_id, kind=Kind.PULLING).order_by("at", "id"))


def test_a_launch_pulls_the_missing_image_with_progress_and_bills_from_the_container_start(api, registry):
    image = image_push_fresh(registry=registry)
    assert not image_present(image)
    TemplateFactory(slug="pulled", image=image)
    seen_progress: list[str] = []
    launched = _launch(api, template="pulled", wait=0)
    deadline = time.monotonic() + 180
    while (body := api.get(f"/api/gpu/instances/{launched['id']}").json())["status"] not in ("running", "failed"):
        if body["progress"]:
            seen_progress.append(body["progress"])
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    try:
        assert body["status"] == "running", body
        assert body["progress"] == ""  # cleared once pulled
        events = _pulling(body["id"])
        assert events[0].message == f"pulling {image}"
        progress = [e for e in events if e.data.get("total_bytes")]
        assert progress, [e.message for e in events]
        # The fresh layer (24 MiB of random bytes) was downloaded, not found locally.
        assert progress[-1].data["total_bytes"] >= 24 * 1024 * 1024
        assert re.fullmatch(r"pulling \d+ of \d+ MB", progress[0].message), progress[0].message
        assert events[-1].message.startswith(f"pulled {image} (")
        assert image_present(image)
        assert HostImage.objects.get(image=image).last_used_at is not None  # admin → Host images
        # Pull time is never billed: the segment opens after the pull, at the container's start.
        started = InstanceEvent.objects.get(instance__public_id=body["id"], kind=Kind.STARTED)
        assert started.at >= events[-1].at
        assert all(p.startswith("pulling") for p in seen_progress)
    finally:
        api.delete(f"/api/gpu/instances/{body['id']}")
        _settled_destroy(body["id"])
        image_remove(image)


def _settled_destroy(instance_id: str) -> None:
    deadline = time.monotonic() + 60
    while Instance.objects.get(public_id=instance_id).status != "terminated" and time.monotonic() < deadline:
        time.sleep(0.3)


def test_two_launches_of_one_missing_image_on_one_host_pull_it_once(api, registry):
    image = image_push_fresh(registry=registry, name="pulltwice")
    TemplateFactory(slug="pulled-twice", image=image)
    first = _launch(api, template="pulled-twice", wait=0)
    second = _launch(api, template="pulled-twice", wait=0, gpu="rtx-pro-6000")
    try:
        bodies = [_settled(api, first["id"]), _settled(api, second["id"])]
        assert [b["status"] for b in bodies] == ["running", "running"], bodies
        starts = [e for i in (first["id"], second["id"]) for e in _pulling(i) if e.message == f"pulling {image}"]
        assert len(starts) == 1
    finally:
        for body in (first, second):
            api.delete(f"/api/gpu/instances/{body['id']}")
            _settled_destroy(body["id"])
        image_remove(image)


def test_a_pull_the_registry_refuses_ends_failed_with_its_reason_and_frees_everything(api, registry):
    missing = f"{registry.address}/gpucloud-test/never-pushed:latest"
    TemplateFactory(slug="never-pushed", image=missing)
    body = _settled(api, _launch(api, template="never-pushed")["id"])
    assert body["status"] == "failed"
    assert f"pull {missing}:" in body["error"]
    assert "not found" in body["error"] or "unknown" in body["error"], body["error"]
    instance = Instance.objects.get(public_id=body["id"])
    assert instance.gpu is None
    assert instance.started_at is None  # never billed
    assert instance.progress == ""
    assert not PortBinding.objects.filter(instance=instance).exists()
    assert labelled_containers() == []


def test_a_registry_that_demands_a_login_is_pulled_from_with_the_templates_credential(api, auth_registry):
    image = image_push_fresh(registry=auth_registry, name="private")
    template = TemplateFactory(slug="private", image=image)
    try:
        refused = _settled(api, _launch(api, template="private")["id"])
        assert refused["status"] == "failed"
        assert "auth" in refused["error"].lower(), refused["error"]
        assert not image_present(image)

        wrong = RegistryCredential.objects.create(
            registry=auth_registry.address, username=auth_registry.username, password_encrypted=encrypt("wrong")
        )
        assert _settled(api, _launch(api, template="private")["id"])["status"] == "failed"

        # The template's own credential wins over its registry's (the wrong one).
        RegistryCredential.objects.create(
            template=template, username=auth_registry.username, password_encrypted=encrypt(auth_registry.password)
        )
        body = _settled(api, _launch(api, template="private")["id"])
        assert body["status"] == "running", body
        assert image_present(image)
        assert decrypt(wrong.password_encrypted) == "wrong"
        api.delete(f"/api/gpu/instances/{body['id']}")
        _settled_destroy(body["id"])
    finally:
        image_remove(image)
