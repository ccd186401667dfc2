"""The beat tasks run in a real Celery worker against the test database."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from billing import selectors, tasks
from billing.models import BillingAccount, UsageRecord
from tests.billing.helpers import event, instance_for

pytestmark = pytest.mark.celery


def wait_for(predicate, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_metering_and_enforcement_run_in_the_worker(celery_worker, alice, gpu_types):
    instance = instance_for(alice, gpu_types["rtx-5090"])
    event(instance, "started", timezone.now() - timedelta(minutes=10))
    # The test worker consumes this host's queue; beat sends these to "default".
    queue = f"host.{settings.GPUCLOUD_HOST_NAME}"

    tasks.meter_usage.apply_async(queue=queue)
    assert wait_for(lambda: UsageRecord.objects.filter(instance=instance, billed_usd__gt=0).exists())
    usage = UsageRecord.objects.get(instance=instance)
    assert (usage.billed_until - usage.started_at) >= timedelta(minutes=10)
    assert selectors.balance_get(user=alice) == -usage.billed_usd
    assert selectors.balance_from_ledger(user=alice) == -usage.billed_usd

    tasks.enforce_balances.apply_async(queue=queue)
    assert wait_for(lambda: BillingAccount.objects.filter(user=alice, depleted_since__isnull=False).exists())
