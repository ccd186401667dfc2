"""An instance's logs come from its host's worker, never from the web process's Docker.

The web process here is the test process (the API and the page through Django's test
clients); the worker is a real Celery worker process on this host's queue.
"""

from __future__ import annotations

import secrets
from http import HTTPStatus

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from gpucloud.celery import app
from instances.host.runtime import DockerRuntime
from instances.models import Instance
from instances.services import instance_launch
from instances.services.logs import LOG_BYTES_MAX, LOG_LINES_MAX, logs_bound, logs_lines
from tests.containers import wait_for_status
from tests.factories import HostFactory, InstanceFactory, TemplateFactory

SSHD_SAYS = "Server listening on 0.0.0.0 port 22"


def _api(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user=user)
    return api


@pytest.mark.docker
@pytest.mark.celery
def test_logs_come_from_the_hosts_worker_while_the_web_process_cannot_reach_docker(
    celery_worker, alice, this_host, client, monkeypatch
):
    instance = instance_launch(
        user=alice, template=TemplateFactory(), gpu_type="rtx-5090", storage_gb=20, access=["ssh"]
    )
    instance = wait_for_status(instance, Instance.Status.RUNNING, Instance.Status.FAILED)
    assert instance.status == Instance.Status.RUNNING, instance.last_error

    # A fault injected in this (the web) process only: any use of a Docker runtime here
    # fails the test. The worker is another process and reads the container for real.
    def no_docker_here(*args, **kwargs):
        raise AssertionError("the web process used the Docker runtime")

    monkeypatch.setattr(DockerRuntime, "__init__", no_docker_here)
    monkeypatch.setattr(DockerRuntime, "logs", no_docker_here)

    answer = _api(alice).get(f"/api/gpu/instances/{instance.public_id}/logs?lines=50")
    assert answer.status_code == HTTPStatus.OK, answer.content
    assert SSHD_SAYS in answer.json()["logs"]

    client.force_login(alice)
    page = client.get(reverse("web:instance-logs", args=[instance.public_id]))
    assert page.status_code == HTTPStatus.OK
    assert SSHD_SAYS in page.content.decode()


@pytest.mark.django_db
def test_logs_answer_503_host_unavailable_when_no_worker_serves_the_host(alice, gpu_types, settings):
    settings.GPUCLOUD_LOGS_WAIT_SECONDS = 1
    host = HostFactory(name=f"nobody-{secrets.token_hex(3)}")
    instance = InstanceFactory(owner=alice, host=host, status=Instance.Status.RUNNING, gpu_type=gpu_types["rtx-5090"])
    try:
        answer = _api(alice).get(f"/api/gpu/instances/{instance.public_id}/logs")
    finally:
        with app.connection_for_write() as conn:  # the request no worker took
            conn.default_channel.queue_purge(host.queue)

    assert answer.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert answer.json()["error"]["code"] == "instances:host-unavailable"


def test_the_tail_is_bounded_in_lines_and_bytes_and_starts_at_a_whole_line():
    assert logs_lines(10**6) == LOG_LINES_MAX
    assert logs_lines(0) == 1
    text = "".join(f"line {i} " + "x" * 990 + "\n" for i in range(400))  # ~400 KB

    tail = logs_bound(text)

    assert len(tail.encode()) <= LOG_BYTES_MAX
    assert tail.startswith("line ")
    assert tail.endswith("line 399 " + "x" * 990 + "\n")
    assert logs_bound("short\n") == "short\n"
