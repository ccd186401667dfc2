"""exposure_publish / exposure_withdraw against a local Cloudflare API, with the real SDK."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError, connections, transaction

from instances.access.exposure import ExposureFailed, exposure_publish, exposure_withdraw
from instances.models import Host, Instance, PortBinding
from tests.factories import HostFactory, InstanceFactory, TemplateFactory

PORTS = [
    {"name": "ssh", "port": 22, "protocol": "tcp"},
    {"name": "jupyter", "port": 8888, "protocol": "http"},
]


@pytest.fixture
def host(db):
    return HostFactory(name="ws-cf", public_address="203.0.113.9", bind_address="127.0.0.1")


def _instance(*, owner, gpu_type, host, first_port):
    inst = InstanceFactory(
        owner=owner,
        template=TemplateFactory(slug="cf-test", ports=PORTS, access_methods=["ssh", "jupyter"]),
        gpu_type=gpu_type,
        host=host,
        status=Instance.Status.RUNNING,
        access=["ssh", "jupyter"],
    )
    for offset, port in enumerate(PORTS):
        PortBinding.objects.create(
            host=host,
            host_port=first_port + offset,
            instance=inst,
            name=port["name"],
            container_port=port["port"],
            protocol=port["protocol"],
        )
    return inst


def _label(instance):
    return instance.public_id.replace("_", "-")


def test_publish_adds_the_instances_ingress_rules_and_dns_records(cloudflare_settings, alice, gpu_types, host):
    cf = cloudflare_settings
    inst = _instance(owner=alice, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21500)

    exposure_publish(instance=inst)

    label = _label(inst)
    assert cf.ingress == [
        {"hostname": f"{label}-ssh.gpus.example.com", "service": "ssh://127.0.0.1:21500"},
        {"hostname": f"{label}-jupyter.gpus.example.com", "service": "http://127.0.0.1:21501"},
        {"service": "http_status:404"},
    ]
    records = sorted((r["name"], r["type"], r["content"], r["proxied"]) for r in cf.records.values())
    target = f"{cf.tunnel_id}.cfargotunnel.com"
    assert records == [
        (f"{label}-jupyter.gpus.example.com", "CNAME", target, True),
        (f"{label}-ssh.gpus.example.com", "CNAME", target, True),
    ]


def test_publishing_twice_changes_nothing(cloudflare_settings, alice, gpu_types, host):
    cf = cloudflare_settings
    inst = _instance(owner=alice, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21500)
    exposure_publish(instance=inst)
    writes_before = [c for c in cf.calls if c.method != "GET"]

    exposure_publish(instance=inst)

    assert [c for c in cf.calls if c.method != "GET"] == writes_before
    assert len(cf.records) == 2
    assert len(cf.ingress) == 3


def test_withdraw_removes_exactly_that_instances_rules_and_records(cloudflare_settings, alice, bob, gpu_types, host):
    cf = cloudflare_settings
    cf.tunnel_config["ingress"].insert(0, {"hostname": "operator.gpus.example.com", "service": "http://127.0.0.1:80"})
    mine = _instance(owner=alice, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21500)
    theirs = _instance(owner=bob, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21510)
    exposure_publish(instance=mine)
    exposure_publish(instance=theirs)
    assert len(cf.records) == 4

    exposure_withdraw(instance=mine)

    theirs_label = _label(theirs)
    assert cf.ingress == [
        {"hostname": "operator.gpus.example.com", "service": "http://127.0.0.1:80"},
        {"hostname": f"{theirs_label}-ssh.gpus.example.com", "service": "ssh://127.0.0.1:21510"},
        {"hostname": f"{theirs_label}-jupyter.gpus.example.com", "service": "http://127.0.0.1:21511"},
        {"service": "http_status:404"},
    ]
    assert sorted(r["name"] for r in cf.records.values()) == [
        f"{theirs_label}-jupyter.gpus.example.com",
        f"{theirs_label}-ssh.gpus.example.com",
    ]
    deleted = cf.calls_to("DELETE", "/dns_records/")
    assert len(deleted) == 2


def test_withdraw_finds_the_routes_even_after_the_ports_are_released(cloudflare_settings, alice, gpu_types, host):
    cf = cloudflare_settings
    inst = _instance(owner=alice, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21500)
    exposure_publish(instance=inst)
    inst.ports.all().delete()
    inst.status = Instance.Status.TERMINATED
    inst.save()

    exposure_withdraw(instance=inst)
    exposure_withdraw(instance=inst)  # idempotent

    assert cf.ingress == [{"service": "http_status:404"}]
    assert cf.records == {}


def test_a_refused_api_call_becomes_a_domain_error(cloudflare_settings, alice, gpu_types, host, settings):
    settings.GPUCLOUD_CLOUDFLARE_API_TOKEN = "wrong-token"
    inst = _instance(owner=alice, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21500)

    with pytest.raises(ExposureFailed) as info:
        exposure_publish(instance=inst)

    assert info.value.code == "instances:exposure-failed"
    assert "wrong-token" not in repr(info.value.detail)


def test_direct_mode_calls_no_api(fake_cloudflare, settings, alice, gpu_types, host):
    settings.GPUCLOUD_EXPOSURE = "direct"
    settings.GPUCLOUD_CLOUDFLARE_API_BASE = fake_cloudflare.base_url
    inst = _instance(owner=alice, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21500)

    exposure_publish(instance=inst)
    exposure_withdraw(instance=inst)

    assert fake_cloudflare.calls == []


def test_the_api_is_called_with_no_transaction_open_and_the_host_row_unlocked(
    cloudflare_settings, alice, gpu_types, host, transactional_db
):
    cf = cloudflare_settings
    inst = _instance(owner=alice, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21500)
    caller = connections["default"]  # this thread's connection, which calls the API
    seen: list[tuple[str, bool, str]] = []

    def look(method: str, path: str) -> None:
        # On the fake's own thread, hence its own database connection.
        try:
            with transaction.atomic():
                Host.objects.select_for_update(nowait=True).filter(pk=host.pk).first()
            row = "unlocked"
        except OperationalError as exc:
            row = f"locked: {exc}"
        finally:
            connections.close_all()
        seen.append((method, caller.in_atomic_block, row))

    cf.before = look
    exposure_publish(instance=inst)
    exposure_withdraw(instance=inst)

    assert seen
    assert [s for s in seen if s[1] or s[2] != "unlocked"] == []


def test_two_publishes_at_once_on_one_host_keep_both_instances_rules(
    cloudflare_settings, alice, bob, gpu_types, host, transactional_db
):
    cf = cloudflare_settings
    mine = _instance(owner=alice, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21500)
    theirs = _instance(owner=bob, gpu_type=gpu_types["rtx-5090"], host=host, first_port=21510)

    def slow_read(method: str, path: str) -> None:
        if method == "GET" and path.endswith("/configurations"):
            time.sleep(0.3)  # both would read the same document, were they not serialised

    cf.before = slow_read
    barrier, failures = threading.Barrier(2), []

    def publish(instance: Instance) -> None:
        try:
            barrier.wait()
            exposure_publish(instance=instance)
        except Exception as exc:  # reported below, with the rules
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=publish, args=(i,)) for i in (mine, theirs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    hostnames = sorted(rule.get("hostname", "") for rule in cf.ingress)
    assert hostnames == sorted(
        ["", *(f"{_label(i)}-{s}.gpus.example.com" for i in (mine, theirs) for s in ("ssh", "jupyter"))]
    )
    assert len(cf.records) == 4
