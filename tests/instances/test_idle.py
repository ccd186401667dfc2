"""Idle stop and maximum runtime on real Docker with the simulated GPU and a real worker.

The checks are sent to the host's worker as beat sends them (here every half second);
windows are seconds long (the operator's rule may be anything; customers' choices start
at a minute). Activity is real: an SSH session held open with paramiko, a GPU
utilization set for the simulated GPU as an operator would with
`manage.py simulate_gpu_utilization`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import paramiko
import pytest
from django.conf import settings

from instances.host import gpus
from instances.idle_models import IdleRule, InstanceWatch, RuntimeRule
from instances.models import Instance, InstanceEvent
from instances.services import instance_launch
from instances.services.idle_rules import idle_state, keep_alive
from instances.tasks import idle_check_host
from tests.containers import host_port, root_password, wait_for_status
from tests.mail import parts, worker_mail_clear, worker_mails
from tests.processes import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.celery]

Kind = InstanceEvent.Kind
WINDOW = 8  # seconds; the warning comes half-way (GPUCLOUD_IDLE_WARNING_SECONDS is longer)


@pytest.fixture(autouse=True)
def _clean_mail_and_utilization(this_host) -> Iterator[None]:
    worker_mail_clear()
    yield
    for gpu in this_host.gpus.all():
        gpus.simulated_utilization_set(
            directory=settings.GPUCLOUD_SIMULATED_UTILIZATION_DIR, uuid=gpu.uuid, percent=None
        )


def running(user, template) -> Instance:
    instance = instance_launch(user=user, template=template, gpu_type="rtx-5090", storage_gb=20, access=["ssh"])
    instance = wait_for_status(instance, "running", "failed")
    assert instance.status == "running", instance.last_error
    return instance


def checks_until(host, instance: Instance, done, *, timeout: float) -> None:
    """Send the idle check to the host's worker every half second until `done()`."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            instance.refresh_from_db()
            raise AssertionError(f"{instance.public_id} is {instance.status}; events {kinds(instance)}")
        idle_check_host.apply_async(kwargs={"host_id": host.pk}, queue=host.queue)
        time.sleep(0.5)


def checks_for(host, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        idle_check_host.apply_async(kwargs={"host_id": host.pk}, queue=host.queue)
        time.sleep(0.5)


def kinds(instance: Instance) -> list[str]:
    return list(instance.events.order_by("at", "id").values_list("kind", flat=True))


def stopped(instance: Instance) -> bool:
    instance.refresh_from_db()
    return instance.status == "stopped"


def set_utilization(instance: Instance, percent: int) -> None:
    gpus.simulated_utilization_set(
        directory=settings.GPUCLOUD_SIMULATED_UTILIZATION_DIR, uuid=instance.gpu.uuid, percent=percent
    )


def test_an_idle_instance_is_warned_then_stopped_with_the_reason(celery_worker, alice, this_host, sshd_template):
    IdleRule.objects.create(template=sshd_template, idle_seconds=WINDOW, gpu_threshold_percent=10)
    instance = running(alice, sshd_template)
    set_utilization(instance, 3)  # under the threshold

    checks_until(this_host, instance, lambda: Kind.IDLE_WARNING in kinds(instance), timeout=30)
    instance.refresh_from_db()
    assert instance.status == "running", "warned first, not stopped"
    [warning] = instance.events.filter(kind=Kind.IDLE_WARNING)
    assert 0 < warning.data["seconds_left"] <= WINDOW // 2
    state = idle_state(instance=instance)
    assert [w["kind"] for w in state["warnings"]] == ["idle"], "the page's banner and the API show it"

    checks_until(this_host, instance, lambda: stopped(instance), timeout=30)
    assert instance.stop_reason == "idle"
    request = instance.events.get(kind=Kind.STOP_REQUESTED)
    assert request.data == {"reason_code": "idle"}
    assert "idle for 8 s" in request.message
    assert instance.events.filter(kind=Kind.STOPPED).exists(), "a stop like any other: workspace kept"
    watch = InstanceWatch.objects.get(instance=instance)
    assert watch.gpu_percent == 3
    assert watch.connections == 0

    mails = wait_until(lambda: len(worker_mails()) >= 3 and worker_mails(), timeout=10, what="the worker's emails")
    subjects = [m["Subject"] for m in mails]
    assert any(s.startswith(f"GPU Cloud: {instance.public_id} stops in") and "(idle)" in s for s in subjects)
    assert f"GPU Cloud: {instance.public_id} was stopped (idle)" in subjects
    warning_mail = next(m for m in mails if "(idle)" in m["Subject"] and "stops in" in m["Subject"])
    body = parts(warning_mail)
    assert "keep-alive" in body["text/plain"]
    assert "under 10%" in body["text/html"]
    assert warning_mail["To"] == "alice@example.com"


def test_an_open_ssh_session_keeps_it_running(celery_worker, alice, this_host, sshd_template):
    IdleRule.objects.create(template=sshd_template, idle_seconds=WINDOW)
    instance = running(alice, sshd_template)
    set_utilization(instance, 0)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - a fresh test container
    client.connect(
        "127.0.0.1",
        port=host_port(instance, "ssh"),
        username="root",
        password=root_password(instance),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        checks_for(this_host, WINDOW * 1.5)
        instance.refresh_from_db()
        assert instance.status == "running"
        assert Kind.IDLE_WARNING not in kinds(instance)
        assert InstanceWatch.objects.get(instance=instance).connections >= 1
    finally:
        client.close()
    # Once the session ends the instance is idle again and stops.
    checks_until(this_host, instance, lambda: stopped(instance), timeout=40)
    assert instance.stop_reason == "idle"


def test_gpu_utilization_above_the_threshold_keeps_it_running(celery_worker, alice, this_host, sshd_template):
    IdleRule.objects.create(template=sshd_template, idle_seconds=WINDOW, gpu_threshold_percent=10)
    instance = running(alice, sshd_template)
    set_utilization(instance, 85)
    checks_for(this_host, WINDOW * 1.5)
    instance.refresh_from_db()
    assert instance.status == "running"
    assert Kind.IDLE_WARNING not in kinds(instance)
    watch = InstanceWatch.objects.get(instance=instance)
    assert watch.gpu_percent == 85
    assert watch.last_active_at is not None


def test_keep_alive_postpones_the_stop(celery_worker, alice, this_host, sshd_template):
    IdleRule.objects.create(template=sshd_template, idle_seconds=WINDOW)
    instance = running(alice, sshd_template)
    set_utilization(instance, 0)
    checks_until(this_host, instance, lambda: Kind.IDLE_WARNING in kinds(instance), timeout=30)

    watch = keep_alive(instance=instance, actor=alice, seconds=60)
    checks_for(this_host, WINDOW * 1.5)
    instance.refresh_from_db()
    assert instance.status == "running", "kept alive past the old deadline"
    assert kinds(instance).count(Kind.IDLE_WARNING) == 1
    assert Kind.KEEP_ALIVE in kinds(instance)
    assert idle_state(instance=instance)["idle_stop_at"] == watch.keep_alive_until + timedelta(seconds=WINDOW)


def test_max_runtime_stops_a_busy_instance(celery_worker, alice, this_host, sshd_template, gpu_types):
    IdleRule.objects.create(template=sshd_template, idle_seconds=600)
    RuntimeRule.objects.create(gpu_type=gpu_types["rtx-5090"], max_runtime_seconds=WINDOW)
    instance = running(alice, sshd_template)
    set_utilization(instance, 100)
    checks_until(this_host, instance, lambda: stopped(instance), timeout=40)
    assert instance.stop_reason == "max-runtime"
    events = kinds(instance)
    assert events.index(Kind.RUNTIME_WARNING) < events.index(Kind.STOP_REQUESTED)
    assert Kind.IDLE_WARNING not in events
