"""The instance routes on real rows (no container): shapes, errors, state conflicts, queries."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from instances import selectors
from instances.access.sshkeys import sshkey_create
from instances.api.instances import InstanceOutput
from instances.api.serializers import money
from instances.models import Instance, InstanceEvent
from instances.services.events import event_add
from tests.api.helpers import launch
from tests.api.keygen import ed25519_pub

LAUNCH = {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh", "jupyter"]}
SHAPE = {
    "id",
    "name",
    "status",
    "gpu",
    "gpu_type",
    "template",
    "workspace",  # used / size of /workspace (issue 14)
    "storage",
    "host",
    "access",
    "created_at",
    "started_at",
    "stopped_at",
    "error",
    "billing",
    "note",
    "progress",
}


def mark(instance: Instance, status: str) -> Instance:
    """Move a row as the worker would have (these tests run no worker): a conditional
    update() and an event on the timeline (whose post_save tells the API cache)."""
    Instance.objects.filter(pk=instance.pk).update(status=status, started_at=timezone.now())
    event_add(instance=instance, kind=InstanceEvent.Kind.NOTE, source=InstanceEvent.Source.WORKER, message=status)
    instance.refresh_from_db()
    return instance


def test_launch_answers_202_with_the_instance_and_its_location(alice_api, alice, ready):
    response = alice_api.post("/api/gpu/instances", {**LAUNCH, "name": "train"}, format="json")
    assert response.status_code == HTTPStatus.ACCEPTED, response.content
    body = response.json()
    assert set(body) == SHAPE
    assert body["id"].startswith("inst_")
    assert response["Location"] == f"/api/gpu/instances/{body['id']}"
    assert body["status"] == "pending"
    assert (body["gpu"], body["gpu_type"], body["template"], body["storage"]) == (
        "RTX 5090",
        "rtx-5090",
        "test-sshd",
        20,
    )
    assert body["host"] == ready.name
    assert body["billing"] == {"rate": "1.49", "unit": "hour"}
    assert body["error"] is None
    # The owner sees how to get in, secrets included.
    assert body["access"]["ssh"].startswith("ssh root@")
    assert "?token=" in body["access"]["jupyter"]
    assert body["access"]["password"]
    instance = Instance.objects.get(public_id=body["id"])
    assert (instance.owner, instance.name, instance.status) == (alice, "train", "pending")


def test_secrets_are_shown_to_the_owner_only(alice, bob, ready):
    instance = launch(alice)
    shown = selectors.instance_get(user=alice, public_id=instance.public_id)

    def access(user) -> dict:
        return InstanceOutput(shown, context={"request": SimpleNamespace(user=user)}).data["access"]

    assert "password" not in access(bob)
    assert "token" not in access(bob)
    assert "token=" not in access(bob)["jupyter"]
    assert "?token=" in access(alice)["jupyter"]
    assert access(alice)["password"]
    assert access(AnonymousUser()).keys() == access(bob).keys()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"template": "no-such"}, "instances:unknown-template"),
        ({"gpu": "h100"}, "instances:unknown-gpu-type"),
        ({"storage": 1}, "instances:invalid-storage"),
        ({"storage": 10**9}, "instances:invalid-storage"),
        ({"access": ["vnc"]}, "instances:invalid-access"),
        ({"env": {"1BAD": "x"}}, "instances:invalid-env"),
        ({"ssh_keys": ["not a key"]}, "instances:invalid-ssh-key"),
        ({"storage": "lots"}, "invalid-request"),
        ({"template": None}, "invalid-request"),
    ],
)
def test_bad_launches_are_400_with_a_stable_code(alice_api, ready, change, code):
    response = alice_api.post("/api/gpu/instances", {**LAUNCH, **change}, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == code
    assert not Instance.objects.exists()


@pytest.mark.parametrize(
    "name",
    [
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "pythonpath",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "NODE_OPTIONS",
        "BASH_ENV",
        "ENV",
        "PROMPT_COMMAND",
        "JUPYTER_CONFIG_DIR",
        "JAVA_TOOL_OPTIONS",
        "PATH",
        "HOME",
    ],
)
def test_an_env_that_hooks_the_images_interpreters_is_400(alice_api, ready, name):
    """A hook planted in /workspace must not be run by the image's own services."""
    response = alice_api.post("/api/gpu/instances", {**LAUNCH, "env": {name: "/workspace/hook"}}, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == "instances:invalid-env"
    assert response.json()["error"]["detail"] == {"name": name}
    assert not Instance.objects.exists()


def test_an_ordinary_env_is_still_accepted(alice_api, ready):
    env = {"HF_HOME": "/workspace/hf", "ENVIRONMENT": "dev", "MODEL_DIR": "/workspace/models", "MY_PATH": "/a"}
    response = alice_api.post("/api/gpu/instances", {**LAUNCH, "env": env}, format="json")
    assert response.status_code == HTTPStatus.ACCEPTED, response.json()


def test_a_gpu_type_too_small_for_the_template_is_400_naming_both_amounts(alice_api, ready, template):
    template.min_gpu_memory_mb = 49152
    template.save()
    response = alice_api.post("/api/gpu/instances", LAUNCH, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    error = response.json()["error"]
    assert error["code"] == "instances:gpu-too-small"
    assert "49152 MiB" in error["message"]
    assert "32607 MiB" in error["message"]
    assert (error["detail"]["required_memory_mb"], error["detail"]["gpu_memory_mb"]) == (49152, 32607)
    assert not Instance.objects.exists()


def test_no_capacity_is_409_with_the_current_availability(alice_api, alice, ready):
    launch(alice)
    response = alice_api.post("/api/gpu/instances", LAUNCH, format="json")
    assert response.status_code == HTTPStatus.CONFLICT
    error = response.json()["error"]
    assert error["code"] == "instances:no-gpu-available"
    by_sku = {a["sku"]: a for a in error["detail"]["availability"]}
    assert (by_sku["rtx-5090"]["total"], by_sku["rtx-5090"]["free"]) == (1, 0)
    assert by_sku["rtx-pro-6000"]["free"] == 1
    assert Instance.objects.count() == 1


def test_not_enough_balance_is_402(alice_api, ready, settings):
    settings.GPUCLOUD_ADMISSION_CHECKS = ["billing.checks.balance_covers_launch"]
    response = alice_api.post("/api/gpu/instances", LAUNCH, format="json")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED
    assert response.json()["error"]["code"] == "billing:insufficient-balance"
    assert not Instance.objects.exists()


def test_ssh_keys_are_saved_ids_fingerprints_or_raw_keys(alice_api, alice, ready):
    one = sshkey_create(user=alice, public_key=ed25519_pub("one"))
    two = sshkey_create(user=alice, public_key=ed25519_pub("two"))
    raw = ed25519_pub("raw")
    body = {**LAUNCH, "ssh_keys": [str(one.id), two.fingerprint, raw], "ssh_password_auth": False}
    response = alice_api.post("/api/gpu/instances", body, format="json")
    assert response.status_code == HTTPStatus.ACCEPTED, response.content
    instance = Instance.objects.get(public_id=response.json()["id"])
    assert instance.ssh_public_keys == [one.public_key, two.public_key, raw]
    assert instance.ssh_password_auth is False


def test_wait_is_bounded(alice_api, ready):
    response = alice_api.post("/api/gpu/instances?wait=500", LAUNCH, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert "wait" in response.json()["error"]["detail"]
    assert not Instance.objects.exists()


def test_stop_start_restart_and_destroy_move_the_row(alice_api, alice, ready):
    instance = mark(launch(alice), "running")
    path = f"/api/gpu/instances/{instance.public_id}"

    response = alice_api.post(f"{path}/restart")
    assert response.status_code == HTTPStatus.ACCEPTED
    assert response.json()["status"] == "starting"
    # A restart stays on its GPU and ports; only a start after a stop may move.
    assert "A restart keeps its GPU, its ports" in response.json()["note"]
    assert "A restart keeps its GPU" in alice_api.get(path).json()["note"]  # while it restarts

    mark(instance, "running")
    response = alice_api.post(f"{path}/stop")
    assert (response.status_code, response.json()["status"]) == (HTTPStatus.ACCEPTED, "stopping")

    mark(instance, "stopped")
    stopped = alice_api.get(path).json()
    assert "may be a different device" in stopped["note"]
    response = alice_api.post(f"{path}/start")
    assert (response.status_code, response.json()["status"]) == (HTTPStatus.ACCEPTED, "starting")
    # A plain start says what a start does, not what a restart does.
    for body in (response.json(), alice_api.get(path).json()):
        assert "may be a different device" in body["note"]
        assert "restart" not in body["note"]

    response = alice_api.delete(path)
    assert (response.status_code, response.json()["status"]) == (HTTPStatus.ACCEPTED, "terminating")
    kinds = [e["kind"] for e in alice_api.get(f"{path}/events").json()["results"]]
    assert kinds[:2] == ["created", "scheduled"]
    assert {"restart-requested", "stop-requested", "start-requested", "destroy-requested"} <= set(kinds)


def test_a_destroyed_instance_keeps_no_credentials(alice_api, alice, ready):
    instance = mark(launch(alice, env={"HF_TOKEN": "hf_secret_value"}), "running")
    path = f"/api/gpu/instances/{instance.public_id}"
    before = alice_api.get(path).json()["access"]
    assert before["password"]
    assert before["token"]

    response = alice_api.delete(path)
    assert response.status_code == HTTPStatus.ACCEPTED
    for body in (response.json(), alice_api.get(path).json()):
        assert "password" not in body["access"]
        assert "token" not in body["access"]
        assert before["password"] not in json.dumps(body)
        assert before["token"] not in json.dumps(body)
    # Erased, not hidden: the row holds nothing that opens the instance or was the customer's secret.
    instance.refresh_from_db()
    assert (instance.password_encrypted, instance.access_token_encrypted, instance.env) == ("", "", {})


@pytest.mark.parametrize(("status", "action"), [("running", "start"), ("stopped", "stop"), ("pending", "restart")])
def test_a_state_conflict_is_409_and_changes_nothing(alice_api, alice, ready, status, action):
    instance = mark(launch(alice), status)
    events = InstanceEvent.objects.filter(instance=instance).count()
    response = alice_api.post(f"/api/gpu/instances/{instance.public_id}/{action}")
    assert response.status_code == HTTPStatus.CONFLICT
    assert response.json()["error"]["code"] == "instances:invalid-state"
    instance.refresh_from_db()
    assert instance.status == status
    assert InstanceEvent.objects.filter(instance=instance).count() == events


def test_a_start_during_the_backoff_is_429_with_the_wait(alice_api, alice, ready):
    """After starts whose containers never became ready, a new start waits (issue 16)."""
    instance = mark(launch(alice), "failed")
    Instance.objects.filter(pk=instance.pk).update(
        gpu=None, failed_starts=3, start_not_before=timezone.now() + timedelta(seconds=120)
    )
    events = InstanceEvent.objects.filter(instance=instance).count()

    response = alice_api.post(f"/api/gpu/instances/{instance.public_id}/start")
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    error = response.json()["error"]
    assert error["code"] == "instances:start-backoff"
    assert 119 <= error["detail"]["retry_after_seconds"] <= 120
    assert error["detail"]["failed_starts"] == 3
    assert f"try again in {error['detail']['retry_after_seconds']} s" in error["message"]
    assert response["Retry-After"] == str(error["detail"]["retry_after_seconds"])
    instance.refresh_from_db()
    assert instance.status == "failed"
    assert InstanceEvent.objects.filter(instance=instance).count() == events

    Instance.objects.filter(pk=instance.pk).update(start_not_before=timezone.now() - timedelta(seconds=1))
    response = alice_api.post(f"/api/gpu/instances/{instance.public_id}/start")
    assert (response.status_code, response.json()["status"]) == (HTTPStatus.ACCEPTED, "starting")


def test_destroying_twice_is_a_409(alice_api, alice, ready):
    instance = launch(alice)
    path = f"/api/gpu/instances/{instance.public_id}"
    assert alice_api.delete(path).status_code == HTTPStatus.ACCEPTED
    assert alice_api.delete(path).status_code == HTTPStatus.CONFLICT


def test_the_list_is_mine_filtered_by_status_and_paginated(alice_api, alice, bob, ready):
    first = mark(launch(alice), "stopped")
    second = launch(alice, gpu_type="rtx-pro-6000")
    mark(launch(bob), "stopped")
    listed = alice_api.get("/api/gpu/instances").json()
    assert listed["count"] == 2
    assert [i["id"] for i in listed["results"]] == [second.public_id, first.public_id]
    only_stopped = alice_api.get("/api/gpu/instances?status=stopped").json()["results"]
    assert [i["id"] for i in only_stopped] == [first.public_id]
    page = alice_api.get("/api/gpu/instances?limit=1&offset=1").json()
    assert [i["id"] for i in page["results"]] == [first.public_id]
    assert alice_api.get("/api/gpu/instances?status=nonsense").status_code == HTTPStatus.BAD_REQUEST


def test_the_list_costs_the_same_queries_for_1_and_20_instances(
    alice_api, alice, ready, template, gpu_types, django_assert_num_queries
):
    from tests.factories import GpuFactory

    # One GPU per instance: simulated GPUs of the type added to this host.
    for index in range(10, 29):
        GpuFactory(host=ready, index=index, gpu_type=gpu_types["rtx-5090"])

    def running_instance() -> None:
        mark(launch(alice), "running")

    running_instance()
    alice_api.get("/api/gpu/instances")  # the token's last_used_at is written once a minute
    with CaptureQueriesContext(connection) as one:
        assert len(alice_api.get("/api/gpu/instances").json()["results"]) == 1
    for _ in range(19):
        running_instance()
    with django_assert_num_queries(len(one.captured_queries)):
        body = alice_api.get("/api/gpu/instances").json()
    assert len(body["results"]) == 20
    assert all(i["access"]["ssh"].startswith("ssh root@") for i in body["results"])


def test_logs_are_empty_without_a_container_and_lines_are_bounded(alice_api, alice, ready):
    instance = launch(alice)
    path = f"/api/gpu/instances/{instance.public_id}/logs"
    assert alice_api.get(path).json() == {"id": instance.public_id, "logs": ""}
    assert alice_api.get(f"{path}?lines=0").status_code == HTTPStatus.BAD_REQUEST
    assert alice_api.get(f"{path}?lines=100000").status_code == HTTPStatus.BAD_REQUEST


def test_availability_lists_each_type_with_its_rate(alice_api, alice, ready):
    launch(alice)
    rows = {a["sku"]: a for a in alice_api.get("/api/gpu/availability").json()}
    assert rows["rtx-5090"] == {
        "sku": "rtx-5090",
        "display_name": "RTX 5090",
        "rate_per_hour": "1.49",
        "total": 1,
        "free": 0,
    }
    assert (rows["rtx-pro-6000"]["free"], rows["rtx-pro-6000"]["rate_per_hour"]) == (1, "2.99")


def test_launches_are_throttled_with_retry_after(alice_api, ready, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"instance-create": "2/minute"}}
    codes = [
        alice_api.post("/api/gpu/instances", {**LAUNCH, "template": "x"}, format="json").status_code for _ in range(2)
    ]
    assert codes == [HTTPStatus.BAD_REQUEST] * 2
    response = alice_api.post("/api/gpu/instances", LAUNCH, format="json")
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["error"]["code"] == "throttled"
    # Reading is not throttled by the launch limit.
    assert alice_api.get("/api/gpu/instances").status_code == HTTPStatus.OK
    assert not Instance.objects.exists()


def test_rates_are_shown_as_customers_read_them():
    assert [money(Decimal(v)) for v in ("1.4900", "2", "0.1250", "10.10")] == ["1.49", "2.00", "0.125", "10.10"]


@pytest.mark.parametrize("path", ["/api/gpu/instances/", "/api/gpu/nothing", "/api/gpu/instances/inst_x/reboot"])
def test_an_unknown_api_path_is_a_404_in_the_error_shape(alice_api, path):
    response = alice_api.post(path)
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.json()["error"]["code"] == "not-found"
