"""Launch validation, GPU and port scheduling, availability: real PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from http import HTTPStatus

import pytest
from django.db import connection

from instances import errors, selectors
from instances.access.crypto import decrypt
from instances.models import Gpu, GpuType, Host, Instance, InstanceEvent, PortBinding
from instances.services import instance_launch, instance_logs, instance_start, instance_stop
from templates_app.models import Template
from tests.containers import wait_for_status
from tests.factories import TemplateFactory, UserFactory


def launch(user, sshd_template, **overrides):
    values = {
        "user": user,
        "template": sshd_template.slug,
        "gpu_type": "rtx-5090",
        "storage_gb": 20,
        "access": ["ssh"],
    }
    values.update(overrides)
    return instance_launch(**values)


@pytest.mark.django_db
def test_a_launch_holds_a_free_gpu_of_the_type_and_binds_ports_in_the_host_range(alice, this_host, sshd_template):
    instance = launch(alice, sshd_template, access=["ssh", "jupyter"], name="my box")

    assert instance.status == Instance.Status.PENDING
    assert instance.gpu.gpu_type.sku == "rtx-5090"
    assert instance.host == this_host
    ports = {b.name: b.host_port for b in instance.ports.all()}
    assert set(ports) == {"ssh", "jupyter"}
    assert all(this_host.port_range_start <= p <= this_host.port_range_end for p in ports.values())
    assert len(decrypt(instance.password_encrypted)) >= 20
    assert len(decrypt(instance.access_token_encrypted)) >= 20
    assert decrypt(instance.password_encrypted) not in instance.password_encrypted
    kinds = list(instance.events.values_list("kind", flat=True))
    assert kinds == [InstanceEvent.Kind.CREATED, InstanceEvent.Kind.SCHEDULED]


@pytest.mark.django_db
def test_only_the_requested_access_methods_are_published(alice, this_host, sshd_template):
    instance = launch(alice, sshd_template, access=["ssh"])
    assert list(instance.ports.values_list("name", flat=True)) == ["ssh"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"template": "no-such-template"}, errors.UnknownTemplate),
        ({"gpu_type": "h100-80gb"}, errors.UnknownGpuType),
        ({"storage_gb": 1}, errors.InvalidStorage),
        ({"storage_gb": 100_000}, errors.InvalidStorage),
        ({"access": ["code-server"]}, errors.InvalidAccess),
        ({"env": {"1BAD": "x"}}, errors.InvalidEnv),
        ({"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}, errors.InvalidEnv),
        ({"env": {"LD_PRELOAD": "/evil.so"}}, errors.InvalidEnv),
        ({"env": {"GPUCLOUD_ROOT_PASSWORD": "x"}}, errors.InvalidEnv),
        ({"env": {"OK": 3}}, errors.InvalidEnv),
        ({"ssh_public_keys": ["not a key"]}, errors.InvalidSSHKey),
    ],
)
def test_it_refuses_bad_launches_with_stable_codes(alice, this_host, sshd_template, overrides, error):
    with pytest.raises(error) as caught:
        launch(alice, sshd_template, **overrides)

    assert caught.value.status == HTTPStatus.BAD_REQUEST
    assert caught.value.code.startswith("instances:")
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_a_disabled_template_cannot_be_launched(alice, this_host):
    hidden = TemplateFactory(slug="hidden", enabled=False)
    with pytest.raises(errors.UnknownTemplate):
        launch(alice, hidden)


@pytest.mark.django_db
def test_no_capacity_lists_what_is_free(alice, bob, this_host, sshd_template):
    launch(alice, sshd_template)
    with pytest.raises(errors.NoCapacity) as caught:
        launch(bob, sshd_template)

    assert caught.value.status == HTTPStatus.CONFLICT
    free = {row["sku"]: row["free"] for row in caught.value.detail["availability"]}
    assert free == {"rtx-5090": 0, "rtx-pro-6000": 1}


@pytest.mark.django_db
def test_availability_counts_only_enabled_gpus_on_online_hosts(alice, this_host, sshd_template):
    launch(alice, sshd_template)
    rows = {row["sku"]: row for row in selectors.availability()}
    assert (rows["rtx-5090"]["total"], rows["rtx-5090"]["free"]) == (1, 0)
    assert (rows["rtx-pro-6000"]["total"], rows["rtx-pro-6000"]["free"]) == (1, 1)

    this_host.gpus.filter(index=1).update(enabled=False)
    assert {r["sku"]: r["total"] for r in selectors.availability()}["rtx-pro-6000"] == 0
    Host.objects.filter(pk=this_host.pk).update(status=Host.Status.DRAINING)
    assert {r["sku"]: r["total"] for r in selectors.availability()} == {"rtx-5090": 0, "rtx-pro-6000": 0}
    with pytest.raises(errors.NoCapacity):
        launch(alice, sshd_template, gpu_type="rtx-pro-6000")


@pytest.mark.django_db
def test_admission_checks_run_and_their_error_propagates(alice, this_host, sshd_template, settings):
    settings.GPUCLOUD_ADMISSION_CHECKS = ["tests.instances.test_scheduling.refuse_everyone"]
    with pytest.raises(errors.AdmissionRefused):
        launch(alice, sshd_template)
    assert not Instance.objects.exists()


def refuse_everyone(*, user, gpu_type, template) -> None:
    raise errors.AdmissionRefused(detail={"user": user.username, "gpu": gpu_type.sku, "template": template.slug})


@pytest.mark.django_db
def test_a_template_needing_more_gpu_memory_than_the_type_has_is_refused_before_anything_is_held(
    alice, this_host, sshd_template
):
    Template.objects.filter(pk=sshd_template.pk).update(min_gpu_memory_mb=40960)  # the types have 32607 MiB
    with pytest.raises(errors.GpuTooSmall) as caught:
        launch(alice, sshd_template)

    assert (caught.value.code, caught.value.status) == ("instances:gpu-too-small", HTTPStatus.BAD_REQUEST)
    assert "40960 MiB" in caught.value.message
    assert "32607 MiB" in caught.value.message
    assert caught.value.detail == {
        "template": "test-sshd",
        "gpu": "rtx-5090",
        "required_memory_mb": 40960,
        "gpu_memory_mb": 32607,
    }
    assert not Instance.objects.exists()
    assert not PortBinding.objects.exists()
    # A type with enough memory takes it.
    GpuType.objects.filter(sku="rtx-pro-6000").update(memory_mb=97887)
    assert launch(alice, sshd_template, gpu_type="rtx-pro-6000").status == Instance.Status.PENDING


@pytest.mark.django_db
def test_an_unknown_type_memory_falls_back_to_its_gpus_and_else_lets_the_launch_through(
    alice, bob, this_host, sshd_template
):
    GpuType.objects.update(memory_mb=0)
    Template.objects.filter(pk=sshd_template.pk).update(min_gpu_memory_mb=40960)
    # The type's memory is unknown: its GPUs' (the simulated RTX 5090 reports 32607 MiB) decides.
    with pytest.raises(errors.GpuTooSmall) as caught:
        launch(alice, sshd_template)
    assert caught.value.detail["gpu_memory_mb"] == 32607

    # Nobody knows the memory: nothing to judge by, so the launch goes through.
    Gpu.objects.update(memory_mb=0)
    assert launch(bob, sshd_template).status == Instance.Status.PENDING


@pytest.mark.django_db
def test_a_stopped_instance_whose_template_grew_too_big_is_refused_on_start(alice, this_host, sshd_template):
    instance = launch(alice, sshd_template)
    Instance.objects.filter(pk=instance.pk).update(status=Instance.Status.STOPPED, gpu=None)
    PortBinding.objects.filter(instance=instance).delete()
    events = instance.events.count()
    instance.refresh_from_db()
    # The operator raised the template's minimum while the instance was stopped.
    Template.objects.filter(pk=sshd_template.pk).update(min_gpu_memory_mb=65536)

    with pytest.raises(errors.GpuTooSmall) as caught:
        instance_start(instance=instance)

    assert "65536 MiB" in caught.value.message
    instance.refresh_from_db()
    assert (instance.status, instance.gpu) == (Instance.Status.STOPPED, None)
    assert not PortBinding.objects.filter(instance=instance).exists()
    assert instance.events.count() == events


@pytest.mark.django_db
def test_selectors_scope_instances_to_their_owner(alice, bob, this_host, sshd_template):
    mine = launch(alice, sshd_template)
    assert list(selectors.instance_list(user=alice)) == [mine]
    assert list(selectors.instance_list(user=bob)) == []
    assert selectors.instance_get(user=alice, public_id=mine.public_id) == mine
    with pytest.raises(errors.NotFound):
        selectors.instance_get(user=bob, public_id=mine.public_id)
    with pytest.raises(errors.NotFound):
        selectors.instance_get(user=alice, public_id="inst_000000000000")
    assert instance_logs(instance=mine) == ""  # no container yet


@pytest.mark.django_db
def test_transitions_are_checked_first(alice, this_host, sshd_template):
    instance = launch(alice, sshd_template)
    with pytest.raises(errors.InvalidTransition) as caught:
        instance_stop(instance=instance)
    assert caught.value.status == HTTPStatus.CONFLICT
    with pytest.raises(errors.InvalidTransition):
        instance_start(instance=instance)


@pytest.mark.docker
@pytest.mark.celery
def test_twenty_concurrent_launches_for_one_free_gpu_grant_exactly_one(celery_worker, this_host, sshd_template):
    users = [UserFactory(username=f"racer{n}") for n in range(20)]
    barrier = threading.Barrier(len(users))
    outcomes: list[object] = []

    def race(user) -> None:
        barrier.wait()
        try:
            outcomes.append(launch(user, sshd_template, access=["ssh", "jupyter"]))
        except errors.NoCapacity as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds == {"Instance": 1, "NoCapacity": 19}
    assert Instance.objects.filter(status__in=Instance.GPU_HOLDING).count() == 1
    ports = list(PortBinding.objects.values_list("host", "host_port"))
    assert len(ports) == len(set(ports)) == 2
    (granted,) = [o for o in outcomes if isinstance(o, Instance)]
    assert wait_for_status(granted, "running").gpu.gpu_type.sku == "rtx-5090"
