"""Templates that start the way their software does: their own wait for the ports, and a
/dev/shm sized for PyTorch's DataLoader workers (issue 13)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from http import HTTPStatus

import pytest
from rest_framework.test import APIClient

from instances.models import GpuType, Instance
from instances.services import instance_launch
from tests.containers import docker, labelled_containers_remove, wait_for_status
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.docker, pytest.mark.celery]


@pytest.fixture(autouse=True)
def _no_containers_left() -> Iterator[None]:
    yield
    labelled_containers_remove()


def _launch(user, template, gpu: str = "rtx-5090") -> Instance:
    access = list(template.access_methods)
    instance = instance_launch(user=user, template=template, gpu_type=gpu, storage_gb=10, access=access)
    return wait_for_status(instance, Instance.Status.RUNNING, Instance.Status.FAILED, timeout=120)


def _shm_bytes(instance: Instance) -> int:
    inspected = json.loads(docker("inspect", instance.container_name))[0]
    inside = subprocess.run(
        ["docker", "exec", instance.container_name, "df", "-B1", "--output=size", "/dev/shm"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()[-1]  # fmt: skip
    assert int(inside) == inspected["HostConfig"]["ShmSize"]
    return int(inside)


def test_shm_is_half_the_types_ram_limit_unless_the_template_says_otherwise(celery_worker, this_host, alice):
    GpuType.objects.update(cpu_limit=1, ram_limit_mb=1024)
    sized = _launch(alice, TemplateFactory())
    assert sized.status == Instance.Status.RUNNING, sized.last_error
    assert _shm_bytes(sized) == 512 * 1024 * 1024
    own = _launch(alice, TemplateFactory(slug="own-shm", shm_size_mb=128), gpu="rtx-pro-6000")
    assert own.status == Instance.Status.RUNNING, own.last_error
    assert _shm_bytes(own) == 128 * 1024 * 1024


def test_a_start_waits_the_templates_own_time_and_names_the_port_that_never_answered(celery_worker, this_host, alice):
    GpuType.objects.update(cpu_limit=1, ram_limit_mb=1024)
    ports = [{"name": "ssh", "port": 22, "protocol": "tcp"}, {"name": "webui", "port": 7860, "protocol": "http"}]
    template = TemplateFactory(
        slug="never-answers", ports=ports, access_methods=["ssh", "http"], ready_timeout_seconds=5
    )
    failed = _launch(alice, template)
    assert failed.status == Instance.Status.FAILED
    assert "7860" in failed.last_error
    assert "within 5 s" in failed.last_error
    assert failed.gpu is None


def test_an_http_port_is_ready_when_its_health_path_answers_not_when_it_merely_accepts(celery_worker, this_host, alice):
    GpuType.objects.update(cpu_limit=1, ram_limit_mb=1024)
    jupyter = [{"name": "ssh", "port": 22, "protocol": "tcp"}, {"name": "jupyter", "port": 8888, "protocol": "http"}]
    answers = TemplateFactory(slug="health-ok", ports=jupyter, health_path="/api/status")
    running = _launch(alice, answers)
    assert running.status == Instance.Status.RUNNING, running.last_error  # 403 without a token: it answers
    # sshd accepts on 22 but never speaks HTTP: declared as an HTTP port with a health path, never ready.
    speaks_ssh = [{"name": "webui", "port": 22, "protocol": "http"}]
    silent = TemplateFactory(
        slug="health-never", ports=speaks_ssh, access_methods=["http"], health_path="/health", ready_timeout_seconds=5
    )
    failed = _launch(alice, silent, gpu="rtx-pro-6000")
    assert failed.status == Instance.Status.FAILED
    assert "port(s) 22 (GET /health) did not answer within 5 s" in failed.last_error


def test_staff_set_start_settings_within_bounds(olga, db):
    api = APIClient()
    api.force_authenticate(olga)
    new = {
        "slug": "slow",
        "name": "Slow",
        "image": "example.com/slow:1",
        "ready_timeout_seconds": 900,
        "shm_size_mb": 2048,
    }
    created = api.post("/api/gpu/templates", new, format="json")
    assert created.status_code == HTTPStatus.CREATED, created.content
    assert (created.json()["ready_timeout_seconds"], created.json()["shm_size_mb"]) == (900, 2048)
    refused = api.post("/api/gpu/templates", {**new, "slug": "slower", "ready_timeout_seconds": 1}, format="json")
    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert "ready_timeout_seconds" in json.dumps(refused.json())
    no_path = api.post("/api/gpu/templates", {**new, "slug": "nopath", "health_path": "health"}, format="json")
    assert no_path.status_code == HTTPStatus.BAD_REQUEST
