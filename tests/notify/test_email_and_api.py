"""Emails (text and HTML) through the preferences, the preferences and idle API."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus

import pytest
from django.core import mail

from billing.services.ledger import topup_credit
from instances.idle_models import IdleRule
from instances.models import Instance
from instances.notify.models import Event
from instances.notify.services import notify
from tests.factories import InstanceFactory, TemplateFactory


def test_an_email_has_text_and_html_and_follows_the_preferences(alice, alice_api, django_capture_on_commit_callbacks):
    response = alice_api.patch(
        "/api/gpu/notification-preferences", {"preferences": {"instance.running": {"email": False}}}, format="json"
    )
    assert response.status_code == HTTPStatus.OK
    assert response.json()["preferences"]["instance.running"] == {"email": False, "webhook": True}
    with django_capture_on_commit_callbacks(execute=True):
        notify(user=alice, event=Event.INSTANCE_RUNNING, data={"instance": "inst_x"})
        notify(
            user=alice, event=Event.INSTANCE_FAILED, data={"instance": "inst_x", "reason": "the image was not found"}
        )
    [message] = mail.outbox
    assert message.to == ["alice@example.com"]
    assert message.subject == "GPU Cloud: inst_x failed"
    assert "failed: the image was not found." in message.body
    html, kind = message.alternatives[0]
    assert kind == "text/html"
    assert "<p>Your instance inst_x failed: the image was not found.</p>" in html


def test_unknown_events_or_channels_are_refused_and_change_nothing(alice_api):
    response = alice_api.patch(
        "/api/gpu/notification-preferences",
        {"preferences": {"instance.running": {"email": False}, "instance.exploded": {"email": True}}},
        format="json",
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == "notify:invalid-preference"
    prefs = alice_api.get("/api/gpu/notification-preferences").json()["preferences"]
    assert prefs["instance.running"]["email"] is True


@pytest.fixture
def alice_running(alice, gpu_types) -> Instance:
    template = TemplateFactory()
    IdleRule.objects.create(template=template, idle_seconds=1800, max_idle_seconds=7200, customer_may_disable=False)
    return InstanceFactory(owner=alice, template=template, gpu_type=gpu_types["rtx-5090"], status="running")


def test_customers_change_idle_rules_within_the_operators_limits(alice_api, alice_running):
    url = f"/api/gpu/instances/{alice_running.public_id}/idle"
    state = alice_api.get(url).json()
    assert state["idle_seconds"] == 1800
    assert state["operator"]["max_idle_seconds"] == 7200

    assert alice_api.patch(url, {"idle_seconds": 3600}, format="json").json()["idle_seconds"] == 3600
    for body in ({"idle_seconds": 7201}, {"idle_seconds": 600}, {"idle_disabled": True}, {"max_runtime_seconds": 5}):
        response = alice_api.patch(url, body, format="json")
        assert response.status_code == HTTPStatus.BAD_REQUEST, body
        assert response.json()["error"]["code"] == "instances:invalid-idle-settings"
    assert alice_api.get(url).json()["idle_seconds"] == 3600, "a refused change changes nothing"
    assert alice_api.patch(url, {"idle_seconds": None}, format="json").json()["idle_seconds"] == 1800


def test_keep_alive_needs_a_running_instance_of_mine(alice_api, bob_api, alice_running):
    url = f"/api/gpu/instances/{alice_running.public_id}/keep-alive"
    assert bob_api.post(url, {"seconds": 600}, format="json").status_code == HTTPStatus.NOT_FOUND
    response = alice_api.post(url, {"seconds": 600}, format="json")
    assert response.status_code == HTTPStatus.OK
    assert response.json()["keep_alive_until"] is not None
    assert alice_api.post(url, {"seconds": 10}, format="json").status_code == HTTPStatus.BAD_REQUEST
    Instance.objects.filter(pk=alice_running.pk).update(status="stopped")
    assert alice_api.post(url, {"seconds": 600}, format="json").status_code == HTTPStatus.CONFLICT


def test_a_topup_is_notified_once_however_often_stripe_reports_it(alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        topup_credit(user_id=alice.pk, payment_intent_id="pi_once", amount_usd=Decimal("20"))
        topup_credit(user_id=alice.pk, payment_intent_id="pi_once", amount_usd=Decimal("20"))
    assert [m.subject for m in mail.outbox] == ["GPU Cloud: top-up of $20.00 received"]
    assert "was credited to your balance" in mail.outbox[0].body
