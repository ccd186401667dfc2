from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from instances.models import Instance, PortBinding
from tests.factories import GpuFactory, HostFactory, InstanceFactory


@pytest.mark.django_db
def test_the_database_refuses_two_active_instances_on_one_gpu(alice, bob):
    gpu = GpuFactory()
    InstanceFactory(owner=alice, gpu=gpu, host=gpu.host, status=Instance.Status.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        InstanceFactory(owner=bob, gpu=gpu, host=gpu.host, status=Instance.Status.PENDING)


@pytest.mark.django_db
def test_a_stopped_or_failed_instance_does_not_hold_its_gpu(alice, bob):
    gpu = GpuFactory()
    InstanceFactory(owner=alice, gpu=gpu, host=gpu.host, status=Instance.Status.FAILED)
    InstanceFactory(owner=alice, gpu=gpu, host=gpu.host, status=Instance.Status.STOPPED)
    InstanceFactory(owner=bob, gpu=gpu, host=gpu.host, status=Instance.Status.RUNNING)
    assert Instance.objects.filter(gpu=gpu).count() == 3


@pytest.mark.django_db
def test_the_database_refuses_one_host_port_bound_twice(alice):
    host = HostFactory()
    first, second = InstanceFactory(owner=alice), InstanceFactory(owner=alice)
    PortBinding.objects.create(host=host, host_port=20001, instance=first, name="ssh", container_port=22)
    with pytest.raises(IntegrityError), transaction.atomic():
        PortBinding.objects.create(host=host, host_port=20001, instance=second, name="ssh", container_port=22)
    # The same port on another host is fine.
    PortBinding.objects.create(host=HostFactory(), host_port=20001, instance=second, name="ssh", container_port=22)


@pytest.mark.django_db
def test_the_database_refuses_an_unknown_status(alice):
    with pytest.raises(IntegrityError), transaction.atomic():
        InstanceFactory(owner=alice, status="exploded")
