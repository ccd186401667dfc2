"""The API cache (instances.cache): answers from memory, never stale past a change.

Every change below goes through the path the product uses (services, model saves, the
real worker), and the very next request must show it.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.services import gpu_type_rate_set
from instances import cache as apicache
from instances import services
from instances.access.tokens import token_revoke
from instances.models import ApiToken, GpuType, Host, Instance, PortBinding
from tests.api.helpers import launch, token_client
from tests.containers import wait_for_status

LIST = "/api/gpu/instances"


def queries(client, path: str = LIST) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path)
    assert response.status_code == HTTPStatus.OK, response.content
    return len(ctx.captured_queries), response.json()


def cached(client) -> dict:
    """Warm the cache (learn the token's owner, then cache), then answer from it."""
    client.get(LIST)
    client.get(LIST)
    count, body = queries(client)
    assert count == 0, "the third list request should come from the cache"
    return body


def test_the_list_comes_from_the_cache_until_one_of_its_instances_changes(alice, bob, ready):
    instance = launch(alice, name="before")
    alice_api, bob_api = token_client(alice), token_client(bob)
    assert [i["name"] for i in cached(alice_api)["results"]] == ["before"]
    assert cached(bob_api)["count"] == 0  # entries are per user

    instance.name = "after"
    instance.save(update_fields=["name"])
    count, body = queries(alice_api)
    assert count > 0
    assert [i["name"] for i in body["results"]] == ["after"]
    assert queries(alice_api)[0] == 0  # cached again
    assert queries(bob_api) == (0, cached(bob_api))  # bob's entry did not move


def test_released_ports_and_a_new_instance_show_at_once(alice, ready):
    first = launch(alice)
    api = token_client(alice)
    assert "ssh" in cached(api)["results"][0]["access"]

    PortBinding.objects.filter(instance=first).delete()  # as a stop releases them
    assert "ssh" not in queries(api)[1]["results"][0]["access"]

    launch(alice, gpu_type="rtx-pro-6000")
    assert queries(api)[1]["count"] == 2


def test_catalog_changes_show_at_once(alice, ready):
    launch(alice)
    api = token_client(alice)
    assert cached(api)["results"][0]["billing"]["rate"] == "1.49"

    # billing changes a rate with update(), which sends no signal: it bumps itself.
    gpu_type_rate_set(gpu_type=GpuType.objects.get(sku="rtx-5090"), rate_per_hour=Decimal("1.99"))
    assert queries(api)[1]["results"][0]["billing"]["rate"] == "1.99"

    host = Host.objects.get(pk=ready.pk)
    host.public_address = "198.51.100.7"
    host.save(update_fields=["public_address"])
    assert "198.51.100.7" in queries(api)[1]["results"][0]["access"]["ssh"]


def test_a_revoked_token_is_refused_at_once_although_cached(alice, ready):
    api = token_client(alice)
    cached(api)
    token = ApiToken.objects.get(owner=alice)
    token_revoke(user=alice, token_id=token.id)
    assert api.get(LIST).status_code == HTTPStatus.UNAUTHORIZED


def test_a_deactivated_account_is_refused_at_once_although_cached(alice, ready):
    api = token_client(alice)
    cached(api)
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert api.get(LIST).status_code == HTTPStatus.UNAUTHORIZED


def test_a_staff_flag_taken_away_is_seen_at_once(olga, ready):
    api = token_client(olga)
    cached(api)
    assert api.post("/api/gpu/templates", {}, format="json").status_code == HTTPStatus.BAD_REQUEST  # staff: validated
    olga.is_staff = False
    olga.save(update_fields=["is_staff"])
    assert api.post("/api/gpu/templates", {}, format="json").status_code == HTTPStatus.FORBIDDEN


def test_without_redis_every_request_reads_the_database(alice, ready, settings, monkeypatch, caplog):
    launch(alice)
    api = token_client(alice)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(apicache, "_client", None)
    api.get(LIST)  # the token's first use also records last_used_at
    with caplog.at_level(logging.WARNING, logger="instances.cache"):
        counts = [queries(api)[0] for _ in range(3)]
    assert counts == [3, 3, 3]  # token, page, ports: every time
    assert "API cache bypassed" in caplog.text
    assert "Token" not in caplog.text


def test_the_cache_can_be_turned_off(alice, ready, settings):
    launch(alice)
    api = token_client(alice)
    settings.GPUCLOUD_API_CACHE = False
    api.get(LIST)  # the token's first use also records last_used_at
    assert [queries(api)[0] for _ in range(3)] == [3, 3, 3]


@pytest.mark.celery
def test_what_the_worker_does_is_seen_at_once(celery_worker, alice, ready):
    """The worker is another process: its changes reach this one through Redis."""
    api = token_client(alice)
    instance = launch(alice)
    for _ in range(3):  # cached while pending or provisioning (the worker's bumps permitting)
        assert queries(api)[1]["results"][0]["status"] in ("pending", "provisioning", "running")
    instance = wait_for_status(instance, Instance.Status.RUNNING, Instance.Status.FAILED)
    assert instance.status == Instance.Status.RUNNING, instance.last_error
    assert queries(api)[1]["results"][0]["status"] == "running"
    assert cached(api)["results"][0]["status"] == "running"

    services.instance_stop(instance=instance, actor=alice)
    for _ in range(3):
        queries(api)
    instance = wait_for_status(instance, Instance.Status.STOPPED)
    body = queries(api)[1]["results"][0]
    assert body["status"] == "stopped"
    assert "ssh" not in body["access"]


def test_a_bump_lost_to_a_redis_fault_is_bounded_by_the_entry_age(alice, ready, settings, monkeypatch, caplog):
    """Redis unreachable at the moment of a write (the fault is injected by pointing this
    process at a closed port for that write): the write succeeds, the bump is lost and
    logged, and the cached list is stale until its entry ages out (ENTRY_SECONDS)."""
    instance = launch(alice, name="before")
    api = token_client(alice)
    cached(api)
    live = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(apicache, "_client", None)
    with caplog.at_level(logging.WARNING, logger="instances.cache"):
        instance.name = "after"
        instance.save(update_fields=["name"])
    assert "not bumped" in caplog.text
    settings.REDIS_URL = live
    monkeypatch.setattr(apicache, "_client", None)
    assert queries(api)[1]["results"][0]["name"] == "before"  # the documented bound
    for store in (apicache._tokens, apicache._lists):  # age every entry past the bound
        for entry in store.values():
            entry.at -= apicache.ENTRY_SECONDS + 1
    assert queries(api)[1]["results"][0]["name"] == "after"
