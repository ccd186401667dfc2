"""Retried launches: an `Idempotency-Key` returns the first launch's instance, and `?wait=`
never holds a request past the web worker's timeout.

A client that retries on a timeout or a 5xx must never launch (and pay for) a second
instance. Before: `?wait=45` outlived gunicorn's 30 s worker timeout (a 500 for an
instance already created), and every retry made a new instance.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from instances.access.tokens import token_create
from instances.models import Instance, LaunchKey
from instances.tasks import launch_keys_expire
from tests.api.helpers import token_client

LAUNCH = {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh", "jupyter"]}
ROOT = Path(__file__).resolve().parents[2]


def post(client, body: dict, key: str | None, query: str = ""):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(f"/api/gpu/instances{query}", body, format="json", **headers)


def test_a_retry_with_the_same_key_gets_the_first_instance_as_it_is_now(alice_api, ready):
    first = post(alice_api, LAUNCH, "launch-1")
    assert first.status_code == HTTPStatus.ACCEPTED, first.content
    Instance.objects.filter(public_id=first.json()["id"]).update(status=Instance.Status.RUNNING)

    retry = post(alice_api, LAUNCH, "launch-1")
    assert retry.status_code == HTTPStatus.ACCEPTED, retry.content
    assert retry.json()["id"] == first.json()["id"]
    assert retry.json().keys() == first.json().keys()
    assert retry.json()["status"] == "running"
    assert retry["Location"] == f"/api/gpu/instances/{first.json()['id']}"
    assert Instance.objects.count() == 1


def test_without_a_key_every_launch_is_a_new_instance(alice_api, ready):
    LaunchKey.objects.all().delete()
    assert post(alice_api, {**LAUNCH, "gpu": "rtx-pro-6000"}, None).status_code == HTTPStatus.ACCEPTED
    assert post(alice_api, LAUNCH, None).status_code == HTTPStatus.ACCEPTED
    assert Instance.objects.count() == 2
    assert not LaunchKey.objects.exists()


def test_the_same_key_with_another_body_is_refused_with_a_stable_code(alice_api, ready):
    first = post(alice_api, LAUNCH, "launch-2")
    assert first.status_code == HTTPStatus.ACCEPTED
    other = post(alice_api, {**LAUNCH, "gpu": "rtx-pro-6000"}, "launch-2")
    assert other.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, other.content
    error = other.json()["error"]
    assert error["code"] == "instances:idempotency-key-reused"
    assert error["detail"]["id"] == first.json()["id"]
    assert Instance.objects.count() == 1


def test_keys_are_per_user(alice_api, bob_api, ready):
    alices = post(alice_api, LAUNCH, "shared")
    bobs = post(bob_api, {**LAUNCH, "gpu": "rtx-pro-6000"}, "shared")
    assert bobs.status_code == HTTPStatus.ACCEPTED, bobs.content
    assert bobs.json()["id"] != alices.json()["id"]


def test_an_expired_key_launches_anew(alice_api, ready):
    first = post(alice_api, LAUNCH, "launch-3")
    ttl = settings.GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS
    LaunchKey.objects.update(created_at=timezone.now() - timedelta(seconds=ttl + 1))
    again = post(alice_api, {**LAUNCH, "gpu": "rtx-pro-6000"}, "launch-3")
    assert again.status_code == HTTPStatus.ACCEPTED, again.content
    assert again.json()["id"] != first.json()["id"]
    assert LaunchKey.objects.get().instance.public_id == again.json()["id"]


def test_the_beat_job_deletes_only_expired_keys(alice_api, bob_api, ready):
    post(alice_api, LAUNCH, "old")
    post(bob_api, {**LAUNCH, "gpu": "rtx-pro-6000"}, "fresh")
    ttl = settings.GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS
    LaunchKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(seconds=ttl + 1))
    assert launch_keys_expire() == 1
    assert list(LaunchKey.objects.values_list("key", flat=True)) == ["fresh"]
    assert "instances.tasks.launch_keys_expire" in {j["task"] for j in settings.CELERY_BEAT_SCHEDULE.values()}


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\tb"])
def test_a_malformed_key_is_a_400_and_launches_nothing(alice_api, ready, key):
    response = alice_api.post("/api/gpu/instances", LAUNCH, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.content
    assert response.json()["error"]["code"] == "instances:invalid-idempotency-key"
    assert not Instance.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_make_one_instance(live_server, alice, ready, settings):
    """The unique (owner, key) constraint decides: the key is claimed before the GPU, so
    the losers wait for the winner's commit and get its instance (no 409 for capacity)."""
    _, token = token_create(user=alice, name="race")
    url = f"{live_server.url}/api/gpu/instances"

    def launch(_: int) -> tuple[int, str]:
        request = urllib.request.Request(  # noqa: S310 (loopback live server)
            url,
            data=json.dumps(LAUNCH).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Token {token}", "Idempotency-Key": "race"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback live server)
                return response.status, json.loads(response.read())["id"]
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(launch, range(6)))
    assert {status for status, _ in answers} == {HTTPStatus.ACCEPTED}, answers
    assert len({public_id for _, public_id in answers}) == 1
    assert Instance.objects.count() == 1


def test_a_wait_longer_than_the_cap_answers_202_with_the_instance_as_it_is(alice, ready, settings):
    settings.GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS = 1
    response = post(token_client(alice), LAUNCH, "waited", query="?wait=45")
    assert response.status_code == HTTPStatus.ACCEPTED, response.content
    assert response.json()["status"] == "pending"  # no worker here: it never settles


def test_the_wait_cap_is_below_the_web_workers_timeout_everywhere_gunicorn_runs():
    for name in ("docker-compose.yml", "Dockerfile", "Procfile"):
        text = (ROOT / name).read_text()
        found = re.search(r"--timeout\W+(\d+)", text)
        assert found, f"{name}: gunicorn's --timeout is not set (its default is 30 s)"
        assert int(found.group(1)) - 5 > settings.GPUCLOUD_LAUNCH_WAIT_MAX_SECONDS, name


def test_the_schema_documents_the_header(alice_api):
    schema = alice_api.get("/api/schema/?format=json").json()
    launch = schema["paths"]["/api/gpu/instances"]["post"]
    header = [p for p in launch["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key"]
    assert header, launch["parameters"]
    assert "422" in launch["responses"]
