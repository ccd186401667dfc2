"""Redis is stopped while customers launch.

What we chose: a launch is refused at once with a 503 and a stable code, and leaves
nothing half-made; once Redis is back, launches are accepted and completed by the same
web and worker processes, which nobody restarts. Both tests run gunicorn and a worker
against a redis-server of their own (127.0.0.1:6390), never the machine's shared one.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import pytest
import requests
from django.conf import settings

from instances.access.tokens import token_create
from instances.models import Instance, InstanceEvent, PortBinding
from tests.containers import wait_for_status
from tests.factories import TemplateFactory
from tests.processes import wait_until
from tests.reliability.helpers import assert_nothing_leaked, labelled

pytestmark = [pytest.mark.docker, pytest.mark.celery]

LAUNCH = {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]}


def _launch(server, key: str, *, idempotency_key: str | None = None, **body) -> requests.Response:
    headers = {"Authorization": f"Token {key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return requests.post(f"{server.url}/api/gpu/instances", json={**LAUNCH, **body}, headers=headers, timeout=60)


def test_launches_are_refused_with_503_while_redis_is_down_and_complete_once_it_is_back(
    alice, rel_host, private_redis, start_gunicorn, start_worker
):
    TemplateFactory()
    _, key = token_create(user=alice, name="faults")
    both = {"REDIS_URL": private_redis.url, "GPUCLOUD_THROTTLE_CREATE": "1000/minute"}
    web = start_gunicorn(**both)
    start_worker(**both)

    first = _launch(web, key)
    assert first.status_code == HTTPStatus.ACCEPTED, first.text
    running = wait_for_status(Instance.objects.get(public_id=first.json()["id"]), "running")

    private_redis.stop()
    with ThreadPoolExecutor(8) as pool:
        refused = list(pool.map(lambda _: _launch(web, key, gpu="rtx-pro-6000"), range(8)))
    for answer in refused:
        assert answer.status_code == HTTPStatus.SERVICE_UNAVAILABLE, answer.text
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["error"]["code"] == "service-unavailable"
    assert list(Instance.objects.values_list("public_id", flat=True)) == [running.public_id]
    assert PortBinding.objects.count() == 1
    # The instance already running is not disturbed by the outage.
    assert len(labelled(instance=running.public_id)) == 1

    private_redis.start()  # empty: what was queued before is gone, as after a crash
    after = _launch(web, key, gpu="rtx-pro-6000")
    assert after.status_code == HTTPStatus.ACCEPTED, after.text
    second = wait_for_status(Instance.objects.get(public_id=after.json()["id"]), "running", "failed")
    assert second.status == "running", second.last_error
    assert_nothing_leaked(host=rel_host)


def test_a_launch_whose_task_cannot_be_queued_fails_at_once_and_holds_nothing(
    alice, rel_host, private_redis, start_gunicorn, start_worker
):
    """The broker alone is down (the cache on the shared test Redis still answers), so
    the launch gets past the throttles, commits its row, and then cannot queue its task."""
    TemplateFactory()
    _, key = token_create(user=alice, name="faults")
    split = {"CELERY_BROKER_URL": private_redis.url, "GPUCLOUD_THROTTLE_CREATE": "1000/minute"}
    web = start_gunicorn(**split)
    worker = start_worker(**split)
    # Its start-up tasks (the preflight, which now also overfills a small loop image, and
    # the workspace upkeep) finish first: Celery's consumer dies of a broker lost while a
    # task is still running, which is not what this test breaks.
    wait_until(
        lambda: re.search(r"preflight_host\[\S+\] succeeded", worker.log().rsplit("----- start", 1)[-1]),
        timeout=60,
        what="the worker's start-up preflight",
    )

    private_redis.stop()
    answer = _launch(web, key, idempotency_key="retry-me")
    assert answer.status_code == HTTPStatus.SERVICE_UNAVAILABLE, answer.text
    error = answer.json()["error"]
    assert error["code"] == "instances:queue-unavailable"
    failed = Instance.objects.get(public_id=error["detail"]["id"])
    assert failed.status == "failed"
    assert failed.gpu_id is None
    assert "task queue was unreachable" in failed.last_error
    assert not failed.ports.exists()
    assert not InstanceEvent.objects.filter(instance=failed, kind="started").exists()  # nothing to bill
    assert labelled() == []

    private_redis.start()
    # The client retries its 503 with the same Idempotency-Key: a real launch this time,
    # not a replay of the failure (nothing was started, so the key was freed).
    again = _launch(web, key, idempotency_key="retry-me")
    assert again.status_code == HTTPStatus.ACCEPTED, again.text
    assert again.json()["id"] != failed.public_id
    instance = wait_for_status(Instance.objects.get(public_id=again.json()["id"]), "running", "failed")
    assert instance.status == "running", instance.last_error
    assert_nothing_leaked(host=rel_host)
    assert private_redis.url != settings.CELERY_BROKER_URL  # the test process kept its own broker
