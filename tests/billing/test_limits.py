"""Issue 16: admission counts what a user already holds (balance, per-user limits), two
concurrent launches of one user are admitted one after the other, and the operator's
limits are set per user."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.db import connection

from billing import checks
from billing.errors import InsufficientBalance, LimitGpus, LimitInstances, LimitSpend
from billing.models import UserLimits
from instances import services as instance_services
from instances.host.inventory import host_sync
from instances.models import Instance
from tests.api.helpers import token_client
from tests.billing.helpers import credit, instance_for
from tests.factories import TemplateFactory, UserFactory

ALL_CHECKS = [
    "billing.checks.balance_covers_launch",
    "billing.checks.limits_allow_launch",
    "billing.checks.spend_cap_allows_launch",
]


@pytest.fixture
def admission(settings):
    settings.GPUCLOUD_ADMISSION_CHECKS = ALL_CHECKS
    settings.GPUCLOUD_MIN_BALANCE_MINUTES = 10
    settings.GPUCLOUD_LIMIT_INSTANCES = 8
    settings.GPUCLOUD_LIMIT_GPUS = 8
    settings.GPUCLOUD_LIMIT_SPEND_PER_HOUR_USD = Decimal(50)


def holding(user, gpu_type, *, status: str = Instance.Status.RUNNING) -> Instance:
    """An instance of `user` in `status` (a GPU-holding one by default), on no real GPU."""
    instance = instance_for(user, gpu_type)
    Instance.objects.filter(pk=instance.pk).update(status=status)
    return instance


def test_the_balance_must_cover_every_gpu_held_plus_the_new_one(alice, gpu_types, admission):
    rtx, pro = gpu_types["rtx-5090"], gpu_types["rtx-pro-6000"]  # $1.49/h, $2.99/h
    credit(alice, "0.50")
    checks.balance_covers_launch(user=alice, gpu_type=pro, template=None)  # $0.50 alone
    holding(alice, rtx)
    holding(alice, rtx, status=Instance.Status.STOPPED)  # holds no GPU: not counted
    with pytest.raises(InsufficientBalance) as refused:
        checks.balance_covers_launch(user=alice, gpu_type=pro, template=None)
    detail = refused.value.detail
    # 10 minutes of $1.49 + $2.99 = $4.48/h = $0.7467
    assert detail["running_rate_per_hour_usd"] == "1.49"
    assert detail["rate_per_hour_usd"] == "4.48"
    assert detail["required_usd"] == "0.75"
    assert detail["balance_usd"] == "0.50"
    assert detail["gpus_held"] == 1
    assert "$1.49/h" in refused.value.message
    credit(alice, "0.25")
    checks.balance_covers_launch(user=alice, gpu_type=pro, template=None)


def test_launches_in_a_row_are_refused_once_the_balance_covers_no_more(alice, this_host, admission):
    api = token_client(alice)
    credit(alice, "0.50")
    body = {"template": TemplateFactory().slug, "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]}
    assert api.post("/api/gpu/instances", body, format="json").status_code == HTTPStatus.ACCEPTED
    response = api.post("/api/gpu/instances", {**body, "gpu": "rtx-pro-6000"}, format="json")
    assert response.status_code == HTTPStatus.PAYMENT_REQUIRED, response.content
    error = response.json()["error"]
    assert error["code"] == "billing:insufficient-balance"
    assert error["detail"]["running_rate_per_hour_usd"] == "1.49"
    assert error["detail"]["required_usd"] == "0.75"
    assert Instance.objects.filter(owner=alice).count() == 1


def test_the_instance_limit_counts_gpu_holding_instances(alice, bob, gpu_types, admission, settings):
    rtx = gpu_types["rtx-5090"]
    settings.GPUCLOUD_LIMIT_INSTANCES = 2
    holding(alice, rtx)
    holding(alice, rtx, status=Instance.Status.PENDING)
    holding(alice, rtx, status=Instance.Status.STOPPED)
    holding(bob, rtx)
    with pytest.raises(LimitInstances) as refused:
        checks.limits_allow_launch(user=alice, gpu_type=rtx, template=None)
    assert refused.value.code == "billing:limit-instances"
    assert refused.value.status == HTTPStatus.CONFLICT
    assert refused.value.detail == {"instances_held": 2, "limit": 2}
    checks.limits_allow_launch(user=bob, gpu_type=rtx, template=None)
    # The operator's override for alice wins over the setting.
    UserLimits.objects.create(user=alice, max_instances=3)
    checks.limits_allow_launch(user=alice, gpu_type=rtx, template=None)


def test_the_gpu_limit_and_the_hourly_spend_limit(alice, gpu_types, admission, settings):
    rtx, pro = gpu_types["rtx-5090"], gpu_types["rtx-pro-6000"]
    holding(alice, pro)
    UserLimits.objects.create(user=alice, max_gpus=1)
    with pytest.raises(LimitGpus) as refused:
        checks.limits_allow_launch(user=alice, gpu_type=rtx, template=None)
    assert refused.value.code == "billing:limit-gpus"
    assert refused.value.detail == {"gpus_held": 1, "limit": 1}

    UserLimits.objects.filter(user=alice).update(max_gpus=None, max_spend_per_hour_usd=Decimal("4.00"))
    with pytest.raises(LimitSpend) as spent:
        checks.limits_allow_launch(user=alice, gpu_type=rtx, template=None)  # 2.99 + 1.49 > 4.00
    assert spent.value.code == "billing:limit-spend"
    assert spent.value.detail == {
        "running_rate_per_hour_usd": "2.99",
        "rate_per_hour_usd": "4.48",
        "limit_usd": "4.00",
    }
    UserLimits.objects.filter(user=alice).update(max_spend_per_hour_usd=Decimal("4.48"))
    checks.limits_allow_launch(user=alice, gpu_type=rtx, template=None)
    settings.GPUCLOUD_LIMIT_SPEND_PER_HOUR_USD = Decimal(0)  # 0: no limit by default
    UserLimits.objects.filter(user=alice).update(max_spend_per_hour_usd=None)
    checks.limits_allow_launch(user=alice, gpu_type=pro, template=None)


def test_a_limit_refuses_a_start_too(alice, gpu_types, this_host, admission, settings):
    settings.GPUCLOUD_LIMIT_INSTANCES = 1
    credit(alice, "10")
    holding(alice, gpu_types["rtx-pro-6000"])
    stopped = holding(alice, gpu_types["rtx-5090"], status=Instance.Status.STOPPED)
    Instance.objects.filter(pk=stopped.pk).update(host=this_host)
    stopped.refresh_from_db()
    with pytest.raises(LimitInstances):
        instance_services.instance_start(instance=stopped)
    stopped.refresh_from_db()
    assert stopped.status == Instance.Status.STOPPED


def test_the_api_answers_a_limit_with_its_code(alice, this_host, admission, settings):
    settings.GPUCLOUD_LIMIT_INSTANCES = 1
    credit(alice, "10")
    api = token_client(alice)
    body = {"template": TemplateFactory().slug, "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]}
    assert api.post("/api/gpu/instances", body, format="json").status_code == HTTPStatus.ACCEPTED
    response = api.post("/api/gpu/instances", {**body, "gpu": "rtx-pro-6000"}, format="json")
    assert response.status_code == HTTPStatus.CONFLICT, response.content
    assert response.json()["error"]["code"] == "billing:limit-instances"


def slow_admission(*, user, gpu_type, template) -> None:
    """An admission check that takes its time: without a per-user lock, a second launch
    would be admitted on the same count while the first is still being admitted."""
    time.sleep(0.5)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_launches_of_one_user_are_admitted_one_after_the_other(gpu_types, settings):
    host_sync(name=settings.GPUCLOUD_HOST_NAME, source="simulated")
    settings.GPUCLOUD_ADMISSION_CHECKS = ["billing.checks.limits_allow_launch", f"{__name__}.slow_admission"]
    settings.GPUCLOUD_LIMIT_INSTANCES = 1
    user = UserFactory(username="racer")
    template = TemplateFactory()
    outcomes: list[str] = []

    def launch(sku: str) -> None:
        try:
            instance_services.instance_launch(
                user=user, template=template.slug, gpu_type=sku, storage_gb=20, access=["ssh"]
            )
            outcomes.append("launched")
        except LimitInstances:
            outcomes.append("limit")
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=launch, args=(sku,)) for sku in ("rtx-5090", "rtx-pro-6000")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["launched", "limit"]
    assert Instance.objects.filter(owner=user).count() == 1


def test_an_operator_sets_a_users_limits_in_the_admin(client, olga, alice, gpu_types, admission):
    client.force_login(olga)
    assert client.get("/admin/billing/userlimits/add/").status_code == HTTPStatus.OK
    response = client.post(
        "/admin/billing/userlimits/add/",
        {"user": alice.pk, "max_instances": "1", "max_gpus": "", "max_spend_per_hour_usd": "", "daily_cap_usd": ""},
    )
    assert response.status_code == HTTPStatus.FOUND, response.content
    holding(alice, gpu_types["rtx-5090"])
    with pytest.raises(LimitInstances):
        checks.limits_allow_launch(user=alice, gpu_type=gpu_types["rtx-5090"], template=None)
    assert "alice" in client.get("/admin/billing/userlimits/").content.decode()
