"""Webhooks delivered by the real worker to a receiver on loopback: signed, retried
after 500s with backoff, given up after the limit, logged, replayable, refused for
private addresses."""

from __future__ import annotations

import json
import time
from http import HTTPStatus

import pytest
from django.conf import settings
from django.db import transaction

from gpucloud.celery import app
from instances.notify import webhooks
from instances.notify.errors import InvalidWebhook
from instances.notify.models import Event, WebhookDelivery
from instances.notify.services import delivery_attempt, endpoint_create, notify, preferences_set
from instances.notify.tasks import webhook_deliver
from tests.processes import wait_until

pytestmark = [pytest.mark.celery]


def register(api, receiver) -> tuple[int, str]:
    response = api.post("/api/gpu/webhooks", {"url": receiver.url, "description": "ci"}, format="json")
    assert response.status_code == HTTPStatus.CREATED, response.content
    return response.json()["id"], response.json()["secret"]


def topup_event(user) -> None:
    with transaction.atomic():
        notify(user=user, event=Event.TOPUP_RECEIVED, data={"amount_usd": "20.00"})


def held_deliveries() -> list[dict]:
    """Webhook tasks the test's worker is running, has reserved or holds for a countdown."""
    inspect = app.control.inspect(timeout=2)
    held: list[dict] = []
    for answer in (inspect.active(), inspect.reserved(), inspect.scheduled()):
        assert answer, "the worker answers remote control (else nothing here would be seen)"
        for tasks in answer.values():
            held += [t for t in tasks if (t.get("request") or t).get("name") == webhook_deliver.name]
    return held


def finished(status: str = "") -> WebhookDelivery | None:
    delivery = WebhookDelivery.objects.order_by("-id").first()
    if delivery is None or delivery.status == WebhookDelivery.Status.PENDING:
        return None
    return delivery


def test_a_delivery_is_signed_over_the_timestamp_and_body(celery_worker, alice, alice_api, receiver):
    _, secret = register(alice_api, receiver)
    topup_event(alice)
    delivery = wait_until(finished, timeout=30, what="the delivery")
    assert delivery.status == "succeeded"
    [request] = receiver.received
    header = request.headers[webhooks.SIGNATURE_HEADER]
    assert webhooks.signature_verify(secret=secret, header=header, body=request.body, now=int(time.time()))
    assert not webhooks.signature_verify(
        secret=secret, header=header, body=request.body.replace(b"20.00", b"99.00"), now=int(time.time())
    ), "a changed body fails"
    assert not webhooks.signature_verify(secret="whsec_other", header=header, body=request.body, now=int(time.time()))
    assert not webhooks.signature_verify(
        secret=secret, header=header, body=request.body, now=int(time.time()) + 3600
    ), "an old timestamp fails"
    payload = json.loads(request.body)
    assert payload["type"] == "billing.topup_received"
    assert payload["data"] == {"amount_usd": "20.00"}
    assert payload["id"] == delivery.event_id
    assert request.headers["GpuCloud-Event"] == "billing.topup_received"

    log = alice_api.get("/api/gpu/webhook-deliveries").json()["results"]
    assert [(d["status"], d["last_status_code"], len(d["attempts"])) for d in log] == [("succeeded", 200, 1)]


def test_it_retries_after_500s_with_backoff_then_succeeds(celery_worker, alice, alice_api, receiver):
    register(alice_api, receiver)
    receiver.codes = [500, 503, 200]
    topup_event(alice)
    delivery = wait_until(finished, timeout=60, what="the delivery")
    assert delivery.status == "succeeded"
    assert [a["status_code"] for a in delivery.attempts] == [500, 503, 200]
    assert "next_attempt_at" in delivery.attempts[0]
    assert len({r.headers[webhooks.SIGNATURE_HEADER] for r in receiver.received}) >= 2, "signed again each time"
    assert len({json.loads(r.body)["id"] for r in receiver.received}) == 1, "one event id for every attempt"


def test_it_stops_after_the_limit_and_a_replay_sends_it_again(celery_worker, alice, alice_api, bob_api, receiver):
    register(alice_api, receiver)
    receiver.codes = [500]
    topup_event(alice)
    delivery = wait_until(finished, timeout=60, what="the delivery to give up")
    assert delivery.status == "failed"
    limit = settings.GPUCLOUD_WEBHOOK_MAX_ATTEMPTS
    assert [a["status_code"] for a in delivery.attempts] == [500] * limit
    # Nothing more is sent: the worker holds no delivery (running, reserved or waiting
    # for its countdown), so no later attempt can come.
    wait_until(lambda: not held_deliveries(), timeout=30, what="the worker to let go of the delivery")
    assert len(receiver.received) == limit

    assert bob_api.post(f"/api/gpu/webhook-deliveries/{delivery.pk}/replay").status_code == HTTPStatus.NOT_FOUND
    assert bob_api.get("/api/gpu/webhook-deliveries").json()["results"] == []

    receiver.codes = [200]
    response = alice_api.post(f"/api/gpu/webhook-deliveries/{delivery.pk}/replay")
    assert response.status_code == HTTPStatus.ACCEPTED
    replay = wait_until(
        lambda: WebhookDelivery.objects.filter(pk=response.json()["id"]).exclude(status="pending").first(),
        timeout=30,
        what="the replay",
    )
    assert replay.status == "succeeded"
    assert replay.event_id == delivery.event_id
    assert replay.replay_of_id == delivery.pk


def test_private_loopback_and_link_local_addresses_are_refused_in_production(alice, receiver, settings):
    settings.GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK = False
    for url in (
        receiver.url,
        "http://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
        "ftp://example.com/hook",
    ):
        with pytest.raises(InvalidWebhook):
            endpoint_create(user=alice, url=url)

    # An endpoint registered while allowed is refused at delivery once it no longer is.
    settings.GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK = True
    endpoint, _ = endpoint_create(user=alice, url=receiver.url)
    settings.GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK = False
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event="billing.low_balance", event_id="evt_1", payload={}
    )
    assert delivery_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == "refused"
    assert "not allowed" in delivery.attempts[0]["error"]
    assert receiver.received == []


def test_the_api_refuses_a_private_url_with_a_stable_code(alice_api, settings):
    settings.GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK = False
    response = alice_api.post("/api/gpu/webhooks", {"url": "http://127.0.0.1:9/x"}, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == "notify:invalid-webhook-url"


def test_a_webhook_turned_off_in_the_preferences_is_not_sent(alice, receiver, django_capture_on_commit_callbacks):
    endpoint_create(user=alice, url=receiver.url)
    preferences_set(user=alice, wanted={"billing.topup_received": {"webhook": False}})
    with django_capture_on_commit_callbacks(execute=True):
        notify(user=alice, event=Event.TOPUP_RECEIVED, data={"amount_usd": "5.00"})
        notify(user=alice, event=Event.LOW_BALANCE, data={"balance_usd": "1.00", "threshold_usd": "5"})
    assert list(WebhookDelivery.objects.values_list("event", flat=True)) == ["billing.low_balance"]
