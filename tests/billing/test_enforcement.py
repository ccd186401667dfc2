"""Admission (402 below the minimum balance), stopping at zero after the grace, and
low-balance email once per threshold crossing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.core import mail
from rest_framework.test import APIClient

from billing import checks, selectors, services
from billing.errors import InsufficientBalance
from billing.models import BillingAccount
from instances.models import Instance, InstanceEvent
from tests.billing.helpers import credit, event, instance_for
from tests.factories import TemplateFactory

T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def admission(settings):
    settings.GPUCLOUD_ADMISSION_CHECKS = ["billing.checks.balance_covers_launch"]
    settings.GPUCLOUD_MIN_BALANCE_MINUTES = 10


def test_the_check_refuses_a_balance_below_ten_minutes_of_the_rate(alice, gpu_types, admission):
    rtx = gpu_types["rtx-pro-6000"]  # $2.99/h: 10 minutes = $0.50 (0.4983 rounded)
    with pytest.raises(InsufficientBalance) as refused:
        checks.balance_covers_launch(user=alice, gpu_type=rtx, template=None)
    assert refused.value.code == "billing:insufficient-balance"
    assert refused.value.status == HTTPStatus.PAYMENT_REQUIRED
    assert refused.value.detail["required_usd"] == "0.50"
    credit(alice, "0.49")
    with pytest.raises(InsufficientBalance):
        checks.balance_covers_launch(user=alice, gpu_type=rtx, template=None)
    credit(alice, "0.01")
    checks.balance_covers_launch(user=alice, gpu_type=rtx, template=None)


def test_a_launch_below_the_minimum_balance_is_a_402(alice, this_host, admission):
    api = APIClient()
    api.force_authenticate(alice)
    body = {"template": TemplateFactory().slug, "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]}
    response = api.post("/api/gpu/instances", body, format="json")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED, response.content
    error = response.json()["error"]
    assert error["code"] == "billing:insufficient-balance"
    assert error["detail"]["required_usd"] == "0.25"
    assert not Instance.objects.filter(owner=alice).exists()

    credit(alice, "0.25")
    response = api.post("/api/gpu/instances", body, format="json")
    assert response.status_code == HTTPStatus.ACCEPTED, response.content


def test_a_start_below_the_minimum_balance_is_refused(alice, gpu_types, this_host, admission):
    from instances.services import instance_start

    instance = instance_for(alice, gpu_types["rtx-5090"])
    Instance.objects.filter(pk=instance.pk).update(status="stopped", host=this_host)
    instance.refresh_from_db()
    with pytest.raises(InsufficientBalance):
        instance_start(instance=instance)
    instance.refresh_from_db()
    assert instance.status == Instance.Status.STOPPED


def running_instance(user, gpu_types, host) -> Instance:
    instance = instance_for(user, gpu_types["rtx-5090"])
    Instance.objects.filter(pk=instance.pk).update(status=Instance.Status.RUNNING, started_at=T0, host=host)
    event(instance, "started", T0)
    instance.refresh_from_db()
    return instance


def test_a_user_at_zero_has_their_instances_stopped_after_the_grace_with_events(
    alice, bob, gpu_types, this_host, settings
):
    settings.GPUCLOUD_NEGATIVE_GRACE_SECONDS = 300
    credit(alice, "1.00")
    credit(bob, "100.00")
    alices = [running_instance(alice, gpu_types, this_host) for _ in range(2)]
    bobs = running_instance(bob, gpu_types, this_host)

    services.meter_run(now=T0 + timedelta(minutes=30))  # 2 * 1.49/2 = 1.49 > 1.00
    assert selectors.balance_get(user=alice) < 0
    depleted_at = T0 + timedelta(minutes=31)
    assert services.balances_enforce(now=depleted_at).stopped == []
    assert BillingAccount.objects.get(user=alice).depleted_since == depleted_at
    assert services.balances_enforce(now=depleted_at + timedelta(seconds=299)).stopped == []

    result = services.balances_enforce(now=depleted_at + timedelta(seconds=300))
    assert sorted(result.stopped) == sorted(i.public_id for i in alices)
    for instance in alices:
        instance.refresh_from_db()
        assert instance.status == Instance.Status.STOPPING
        assert instance.stop_reason == "balance exhausted"
        why = instance.events.get(kind=InstanceEvent.Kind.STOP_REQUESTED)
        assert (why.source, why.message) == ("billing", "balance exhausted")
    bobs.refresh_from_db()
    assert bobs.status == Instance.Status.RUNNING
    # A second run finds nothing more to stop (the instances are already stopping).
    assert services.balances_enforce(now=depleted_at + timedelta(seconds=400)).stopped == []


def test_a_top_up_inside_the_grace_spares_the_instances(alice, gpu_types, this_host, settings):
    settings.GPUCLOUD_NEGATIVE_GRACE_SECONDS = 300
    instance = running_instance(alice, gpu_types, this_host)
    services.meter_run(now=T0 + timedelta(minutes=5))
    services.balances_enforce(now=T0 + timedelta(minutes=5))
    credit(alice, "20.00")
    services.balances_enforce(now=T0 + timedelta(minutes=6))
    assert BillingAccount.objects.get(user=alice).depleted_since is None
    assert services.balances_enforce(now=T0 + timedelta(minutes=30)).stopped == []
    instance.refresh_from_db()
    assert instance.status == Instance.Status.RUNNING


# Committed for real: notifications go out when the transaction that caused them commits.
@pytest.mark.django_db(transaction=True)
def test_a_low_balance_email_goes_out_once_per_threshold_crossing(alice, gpu_types, settings):
    settings.GPUCLOUD_LOW_BALANCE_THRESHOLDS_USD = [Decimal(10), Decimal(5)]
    credit(alice, "12.00")
    services.balances_enforce(now=T0)
    assert mail.outbox == []

    services.ledger_post(user_id=alice.pk, kind="adjustment", amount_usd=Decimal("-3"), idempotency_key="a")
    services.balances_enforce(now=T0)
    services.balances_enforce(now=T0)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.com"]
    assert "below $10" in mail.outbox[0].subject
    assert "below $10" in mail.outbox[0].alternatives[0].content, "text and HTML"

    services.ledger_post(user_id=alice.pk, kind="adjustment", amount_usd=Decimal("-1"), idempotency_key="b")
    services.balances_enforce(now=T0)
    assert len(mail.outbox) == 1, "still between the same thresholds"

    services.ledger_post(user_id=alice.pk, kind="adjustment", amount_usd=Decimal("-4"), idempotency_key="c")
    services.balances_enforce(now=T0)
    assert len(mail.outbox) == 2
    assert "below $5" in mail.outbox[1].subject

    credit(alice, "20.00")  # back above both: re-armed
    services.balances_enforce(now=T0)
    services.ledger_post(user_id=alice.pk, kind="adjustment", amount_usd=Decimal("-20"), idempotency_key="d")
    services.balances_enforce(now=T0)
    assert len(mail.outbox) == 3
