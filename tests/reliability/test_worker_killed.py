"""The Celery worker is SIGKILLed in the middle of a launch, then started again.

With Redis and acks_late, the killed task's message comes back only after the broker's
visibility timeout (an hour); the reconciler resends a task for a row stuck in an
in-between status once the instance's lock has expired (CELERY_TASK_TIME_LIMIT + 60 s)
and the row has not moved for 2 x GPUCLOUD_READY_TIMEOUT_SECONDS + 60 s. The test
stands in for those two clocks (it breaks the lock as its expiry would and dates the row's
last change back) instead of waiting minutes, then runs the real reconciler once.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from billing.services import meter_run
from instances import services
from instances.models import Instance, InstanceEvent
from instances.services import reconcile
from instances.services.locks import instance_lock_held, instance_lock_name, lock_break
from tests.containers import wait_for_status
from tests.factories import TemplateFactory
from tests.processes import wait_until
from tests.reliability.helpers import assert_nothing_leaked, labelled

pytestmark = [pytest.mark.docker, pytest.mark.celery]


@pytest.fixture
def slow_template(db):
    """The test image, whose services start only after 4 s: a wide window to kill in."""
    return TemplateFactory(slug="test-sshd-slow", command=["sh", "-c", "sleep 4; exec /opt/gpucloud/start.sh"])


def test_a_launch_ends_running_with_one_container_after_its_worker_is_killed(
    alice, rel_host, slow_template, start_worker
):
    worker = start_worker("killed")
    instance = services.instance_launch(
        user=alice, template=slow_template, gpu_type="rtx-5090", storage_gb=20, access=["ssh"]
    )
    # The container runs (billed from its start) and the worker waits for its ports: kill
    # it there.
    wait_until(lambda: labelled(instance=instance.public_id), timeout=60, what="the container")
    billed = InstanceEvent.objects.filter(instance=instance, kind="started")
    wait_until(billed.exists, timeout=60, what="the container's start")
    worker.kill()
    instance.refresh_from_db()
    assert instance.status == Instance.Status.PROVISIONING
    assert instance_lock_held(instance_id=instance.pk)  # the dead task's lock is still held

    start_worker("restarted")
    # Stand-ins for the clocks (see the module docstring): the lock expired, the row is old.
    lock_break(name=instance_lock_name(instance_id=instance.pk))
    Instance.objects.filter(pk=instance.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    resent_at = timezone.now()
    report = reconcile.host_reconcile(host=rel_host)
    assert report.tasks_resent == [instance.public_id]

    instance = wait_for_status(instance, Instance.Status.RUNNING, Instance.Status.FAILED, timeout=90)
    assert instance.status == Instance.Status.RUNNING, instance.last_error
    assert len(labelled(instance=instance.public_id)) == 1
    assert instance.gpu_id is not None
    assert instance.ports.count() == 1
    assert_nothing_leaked(host=rel_host)

    # Billed from the one `started` fact: the killed task's container start (the GPU was
    # held and its container ran from then); the resent task wrote no second one.
    started = InstanceEvent.objects.get(instance=instance, kind="started")
    assert started.at < resent_at
    meter_run()
    usage = UsageRecord.objects.get(instance=instance, kind="gpu")
    assert usage.started_at == started.at
    assert usage.ended_at is None

    # And a second run of the reconciler finds nothing more to do.
    again = reconcile.host_reconcile(host=rel_host)
    assert not (again.tasks_resent)
    assert not (again.containers_removed)
    assert not (again.instances_ended)

    services.instance_destroy(instance=instance)
    instance = wait_for_status(instance, Instance.Status.TERMINATED)
    assert labelled(instance=instance.public_id) == []
    assert_nothing_leaked(host=rel_host)
    meter_run()
    usage.refresh_from_db()
    ended = InstanceEvent.objects.get(instance=instance, kind="ended")
    assert usage.ended_at == ended.at
    assert usage.closed_at is not None
