from __future__ import annotations

from http import HTTPStatus

import pytest
from django.contrib import admin
from django.urls import reverse

from instances.models import Instance, InstanceEvent, PortBinding
from tests.factories import GpuFactory, InstanceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def some_of_everything(alice, this_host):
    gpu = this_host.gpus.get(index=0)
    inst = InstanceFactory(owner=alice, gpu=gpu, host=this_host, gpu_type=gpu.gpu_type, status=Instance.Status.RUNNING)
    PortBinding.objects.create(host=this_host, host_port=20022, instance=inst, name="ssh", container_port=22)
    InstanceEvent.objects.create(instance=inst, at=inst.created_at, kind="created", source="user", actor=alice)
    return inst


def _our_models():
    return [m for m in admin.site._registry if m._meta.app_label not in ("djstripe",)]


def test_every_admin_changelist_and_change_page_answers_for_an_operator(client, olga, some_of_everything):
    client.force_login(olga)
    checked = 0
    for model in admin.site._registry:
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert client.get(url).status_code == HTTPStatus.OK, url
        obj = model._default_manager.first()
        if obj is not None:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
            assert client.get(change).status_code == HTTPStatus.OK, change
            checked += 1
    assert checked >= 8  # at least our own models with rows


def test_admin_pages_redirect_a_customer_to_the_login(client, alice, some_of_everything):
    client.force_login(alice)
    for model in _our_models():
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        response = client.get(url)
        assert response.status_code == HTTPStatus.FOUND, url
        assert response["Location"].startswith(reverse("admin:login"))


def test_the_gpu_overview_shows_who_holds_each_gpu_and_which_are_simulated(client, olga, some_of_everything):
    client.force_login(olga)
    page = client.get(reverse("admin:instances_gpu_changelist")).content.decode()
    assert some_of_everything.public_id in page
    assert "alice" in page
    assert "— free —" in page  # the second GPU
    assert "simulated" in page

    busy = client.get(reverse("admin:instances_gpu_changelist") + "?busy=yes").content.decode()
    assert "gpu0 (" in busy
    assert "gpu1 (" not in busy
    assert "— free —" not in busy


def test_the_gpu_overview_runs_a_constant_number_of_queries(client, olga, this_host, django_assert_max_num_queries):
    for index in range(2, 12):
        GpuFactory(host=this_host, index=index)
    client.force_login(olga)
    with django_assert_max_num_queries(12):
        assert client.get(reverse("admin:instances_gpu_changelist")).status_code == HTTPStatus.OK
