"""A hostile workspace cannot run the GPU for free (issue 16): a container that starts
but never becomes ready is billed from its start, the failed start closes that segment,
and the next start waits a growing delay. Real Docker, real PostgreSQL, the worker's
services run in this process (so the readiness wait is a test setting)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import services as billing
from billing.models import UsageRecord
from instances.errors import InfrastructureError, StartBackoff
from instances.host.runtime import ContainerState, DockerRuntime
from instances.models import Instance, InstanceEvent
from instances.services import instance_launch, instance_restart, instance_start
from instances.services.provision import instance_provision, instance_start_execute
from templates_app.models import Template
from tests.billing.helpers import credit
from tests.containers import docker, labelled_containers
from tests.factories import TemplateFactory

pytestmark = pytest.mark.docker

Kind = InstanceEvent.Kind
SSH = {"name": "ssh", "port": 22, "protocol": "tcp"}
# Nothing in the test image listens on 9999: readiness never comes, as when a start-up
# hook in /workspace keeps one of the image's services from answering.
DEAD = {"name": "hook", "port": 9999, "protocol": "tcp"}


@pytest.fixture
def never_ready(settings, alice, this_host) -> Instance:
    settings.GPUCLOUD_READY_TIMEOUT_SECONDS = 3
    credit(alice, "50.00")
    template = TemplateFactory(slug="test-never-ready", ports=[SSH, DEAD], access_methods=["ssh"])
    return instance_launch(user=alice, template=template, gpu_type="rtx-5090", storage_gb=10, access=["ssh"])


class Watching(DockerRuntime):
    """The real runtime; notes what billing sees while the ports are awaited."""

    seen: dict[str, object]

    def wait_ready(self, *, container_id: str, ports: list[int], timeout_seconds: float, **probes) -> ContainerState:
        row = Instance.objects.get(container_id=container_id)
        billing.meter_run()
        self.seen = {
            "status": row.status,
            "started": list(row.events.filter(kind=Kind.STARTED).values_list("at", flat=True)),
            "container_started": self.inspect(container_id).started_at,
            "open_gpu_segments": UsageRecord.objects.filter(instance=row, kind="gpu", closed_at=None).count(),
        }
        return super().wait_ready(container_id=container_id, ports=ports, timeout_seconds=timeout_seconds, **probes)


class EngineLostWhileWaiting(DockerRuntime):
    """The engine stops answering during the wait (a fault real Docker gives only by
    being killed): the task fails to be retried, its container already running."""

    def wait_ready(self, *, container_id: str, ports: list[int], timeout_seconds: float, **probes) -> ContainerState:
        raise InfrastructureError("the engine went away")


def kinds(instance: Instance) -> list[str]:
    return list(instance.events.order_by("at", "id").values_list("kind", flat=True))


def test_a_start_that_never_answers_is_billed_from_the_container_start(never_ready, this_host):
    runtime = Watching(base_url=this_host.docker_url)
    instance = instance_provision(instance_id=never_ready.pk, runtime=runtime)

    # While the ports were awaited: still provisioning, but the GPU segment was open and
    # the meter was already charging it, from the container's start.
    assert runtime.seen["status"] == "provisioning"
    assert runtime.seen["started"] == [runtime.seen["container_started"]]
    assert runtime.seen["open_gpu_segments"] == 1

    assert instance.status == "failed"
    assert "9999" in instance.last_error
    assert labelled_containers(instance=instance.public_id) == []
    timeline = [k for k in kinds(instance) if k in (Kind.STARTED, Kind.ENDED, Kind.FAILED)]
    assert timeline == [Kind.STARTED, Kind.ENDED, Kind.FAILED]
    started = instance.events.get(kind=Kind.STARTED).at
    ended = instance.events.get(kind=Kind.ENDED).at
    assert ended - started >= timedelta(seconds=3), "the whole readiness wait is charged"
    assert instance.stopped_at == ended
    assert instance.started_at == started

    billing.meter_run()
    usage = UsageRecord.objects.get(instance=instance, kind="gpu")
    assert (usage.started_at, usage.ended_at) == (started, ended)
    assert usage.closed_at is not None
    # The per-start minimum applies: a failed start costs at least 60 s of GPU.
    assert usage.cost_usd == billing.money(Decimal("1.49") * 60 / 3600)
    assert sum(e.amount_usd for e in usage.entries.all()) == -usage.cost_usd


def test_failed_starts_back_off_and_a_good_start_resets_the_delay(never_ready, this_host):
    instance = instance_provision(instance_id=never_ready.pk)
    assert instance.status == "failed"
    assert instance.failed_starts == 1
    assert 29 <= (instance.start_not_before - timezone.now()).total_seconds() <= 30
    assert instance.events.get(kind=Kind.FAILED).data == {"retry_after_seconds": 30}

    with pytest.raises(StartBackoff) as refused:
        instance_start(instance=instance)
    assert refused.value.code == "instances:start-backoff"
    assert refused.value.status == 429
    assert 29 <= refused.value.detail["retry_after_seconds"] <= 30
    assert f"try again in {refused.value.detail['retry_after_seconds']} s" in refused.value.message
    instance.refresh_from_db()
    assert instance.status == "failed"
    assert kinds(instance).count(Kind.START_REQUESTED) == 0

    # The delay is over: the start goes, fails the same way, and the next delay doubles.
    Instance.objects.filter(pk=instance.pk).update(start_not_before=timezone.now() - timedelta(seconds=1))
    instance_start(instance=Instance.objects.get(pk=instance.pk))
    instance = instance_start_execute(instance_id=instance.pk)
    assert instance.status == "failed"
    assert instance.failed_starts == 2
    assert 59 <= (instance.start_not_before - timezone.now()).total_seconds() <= 60
    assert kinds(instance).count(Kind.STARTED) == kinds(instance).count(Kind.ENDED) == 2
    billing.meter_run()
    assert UsageRecord.objects.filter(instance=instance, kind="gpu", closed_at__isnull=False).count() == 2

    # The workspace is fixed (here: the template no longer waits on the dead port).
    Template.objects.filter(pk=instance.template_id).update(ports=[SSH])
    Instance.objects.filter(pk=instance.pk).update(start_not_before=timezone.now() - timedelta(seconds=1))
    instance_start(instance=Instance.objects.get(pk=instance.pk))
    instance = instance_start_execute(instance_id=instance.pk)
    assert instance.status == "running", instance.last_error
    assert (instance.failed_starts, instance.start_not_before) == (0, None)
    assert kinds(instance).count(Kind.STARTED) == 3


def test_a_start_task_run_again_after_the_container_ran_writes_no_second_started(alice, this_host):
    credit(alice, "50.00")
    launched = instance_launch(
        user=alice, template=TemplateFactory(), gpu_type="rtx-5090", storage_gb=10, access=["ssh"]
    )
    with pytest.raises(InfrastructureError):
        instance_provision(instance_id=launched.pk, runtime=EngineLostWhileWaiting(base_url=this_host.docker_url))
    instance = Instance.objects.get(pk=launched.pk)
    assert instance.status == "provisioning"
    first = instance.events.get(kind=Kind.STARTED)
    assert instance.started_at == first.at

    instance = instance_provision(instance_id=launched.pk)  # the retry
    assert instance.status == "running", instance.last_error
    assert kinds(instance).count(Kind.STARTED) == 1
    assert kinds(instance).count(Kind.ENDED) == 0
    assert instance.events.get(kind=Kind.STARTED).pk == first.pk
    assert labelled_containers(instance=instance.public_id) == [instance.container_id]


def test_a_hook_planted_in_the_workspace_is_billed_and_backed_off_at_the_restart(settings, alice, this_host):
    """The attack itself: an image whose start-up runs what the workspace holds (here: a
    hook that holds the start and never lets sshd listen) restarted after the customer
    planted the hook."""
    settings.GPUCLOUD_READY_TIMEOUT_SECONDS = 3
    credit(alice, "50.00")
    hooked = TemplateFactory(
        slug="test-hooked",
        command=["sh", "-c", "if [ -e /workspace/.hook ]; then exec sleep 600; fi; exec /opt/gpucloud/start.sh"],
    )
    launched = instance_launch(user=alice, template=hooked, gpu_type="rtx-5090", storage_gb=10, access=["ssh"])
    instance = instance_provision(instance_id=launched.pk)
    assert instance.status == "running", instance.last_error
    docker("exec", instance.container_name, "touch", "/workspace/.hook")

    instance_restart(instance=instance)
    instance = instance_start_execute(instance_id=instance.pk)
    assert instance.status == "failed"
    assert labelled_containers(instance=instance.public_id) == []
    timeline = [k for k in kinds(instance) if k in (Kind.STARTED, Kind.ENDED)]
    assert timeline == [Kind.STARTED, Kind.ENDED, Kind.STARTED, Kind.ENDED]
    billing.meter_run()
    second = UsageRecord.objects.filter(instance=instance, kind="gpu").order_by("started_at").last()
    assert second.closed_at is not None
    assert second.ended_at - second.started_at >= timedelta(seconds=3)
    assert second.cost_usd == billing.money(Decimal("1.49") * 60 / 3600)
    with pytest.raises(StartBackoff):
        instance_start(instance=instance)
