"""/metrics: scraped over HTTP and parsed with prometheus_client's own parser; access by
token or address; and Debian's Prometheus scraping the live app and answering a query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import httpx
import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from billing import services as billing
from gpucloud.celery import app as celery_app
from instances.models import Gpu, Instance, InstanceEvent
from tests.api.helpers import launch
from tests.factories import HostFactory, TemplateFactory
from tests.processes import ROOT, free_port, stop_group, wait_until


def _scrape(client: Client, **headers: str) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics", **headers)
    assert response.status_code == HTTPStatus.OK, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _one(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def _post(user, kind: str, amount: str) -> None:
    billing.ledger_post(user_id=user.pk, kind=kind, amount_usd=Decimal(amount), idempotency_key=f"m:{uuid.uuid4()}")


def test_metrics_report_the_fleet_instances_money_and_requests(alice, this_host, settings):
    TemplateFactory()
    host = this_host.name
    five = Gpu.objects.get(host=this_host, gpu_type__sku="rtx-5090")
    Gpu.objects.filter(pk=five.pk).update(
        utilization_percent=87, memory_used_mb=1024, temperature_c=66, power_w=Decimal("412.5"), metrics_at=None
    )
    instance = launch(alice)  # holds the RTX 5090
    # It became ready 4 s after the launch.
    InstanceEvent.objects.create(
        instance=instance, kind=InstanceEvent.Kind.STARTED, at=instance.created_at + timedelta(seconds=4)
    )
    Instance.objects.filter(pk=instance.pk).update(status=Instance.Status.RUNNING)
    _post(alice, "topup", "50")
    _post(alice, "gpu-usage", "-1.25")
    _post(alice, "storage", "-0.05")

    samples = _scrape(Client())
    labels = {"host": host, "gpu_type": "rtx-5090", "simulated": "true"}
    assert _one(samples, "gpucloud_gpus", **labels) == 1
    assert _one(samples, "gpucloud_gpus_busy", **labels) == 1
    assert _one(samples, "gpucloud_gpus_busy", **(labels | {"gpu_type": "rtx-pro-6000"})) == 0
    per_gpu = {"host": host, "index": str(five.index), "uuid": five.uuid, "gpu_type": "rtx-5090"}
    assert _one(samples, "gpucloud_gpu_utilization_percent", **per_gpu) == 87
    assert _one(samples, "gpucloud_gpu_memory_used_bytes", **per_gpu) == 1024 * 1024 * 1024
    assert _one(samples, "gpucloud_gpu_power_watts", **per_gpu) == 412.5
    assert _one(samples, "gpucloud_gpu_temperature_celsius", **per_gpu) == 66
    assert _one(samples, "gpucloud_instances", status="running") == 1
    assert _one(samples, "gpucloud_instances", status="failed") == 0
    assert _one(samples, "gpucloud_launches_total", gpu_type="rtx-5090") == 1
    assert _one(samples, "gpucloud_launch_to_ready_seconds_bucket", le="2.0") == 0
    assert _one(samples, "gpucloud_launch_to_ready_seconds_bucket", le="5.0") == 1
    assert _one(samples, "gpucloud_launch_to_ready_seconds_count") == 1
    assert _one(samples, "gpucloud_launch_to_ready_seconds_sum") == pytest.approx(4.0)
    assert _one(samples, "gpucloud_ledger_usd_total", kind="topup") == 50
    assert _one(samples, "gpucloud_revenue_usd_total", kind="gpu-usage") == pytest.approx(1.25)
    assert _one(samples, "gpucloud_revenue_usd_total", kind="storage") == pytest.approx(0.05)
    assert _one(samples, "gpucloud_broker_up") == 1
    assert ("queue", f"host.{host}") in {k[0] for k in samples["gpucloud_queue_depth"]}
    # django-prometheus's request metrics come along (this scrape's own request at least).
    assert any(name.startswith("django_http_requests_total_by_method") for name in samples)


def test_the_grafana_dashboard_queries_only_metrics_the_app_serves(db, this_host):
    dashboard = json.loads((ROOT / "docs" / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b(?:gpucloud|django)_[a-z_]+", expr)}
    Client().get("/api/gpu/availability")  # a request for django-prometheus's metrics
    text = Client().get("/metrics").content.decode()
    served = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    # Families the fleet has no sample of yet (no GPU reading, no meter run) are declared.
    served |= {f"{f.name}_total" if f.type == "counter" else f.name for f in text_string_to_metric_families(text)}
    assert used - served == set()
    assert len(used) > 15


def test_queue_depth_counts_the_tasks_waiting_for_a_host(db, settings):
    idle = HostFactory(name="metrics-idle-18")
    queue = f"host.{idle.name}"
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)
    try:
        for _ in range(3):
            celery_app.send_task("instances.tasks.nothing", queue=queue)
        assert _one(_scrape(Client()), "gpucloud_queue_depth", queue=queue) == 3
    finally:
        with celery_app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)


def test_metrics_need_the_token_or_an_allowed_address(db, settings):
    far = {"REMOTE_ADDR": "203.0.113.9"}
    assert Client().get("/metrics", **far).status_code == HTTPStatus.FORBIDDEN
    assert Client().get("/metrics").status_code == HTTPStatus.OK  # loopback is allowed by default
    settings.GPUCLOUD_METRICS_ALLOWED_ADDRESSES = ["203.0.113.0/24"]
    assert Client().get("/metrics", **far).status_code == HTTPStatus.OK
    assert Client().get("/metrics").status_code == HTTPStatus.FORBIDDEN

    settings.GPUCLOUD_METRICS_ALLOWED_ADDRESSES = []
    settings.GPUCLOUD_METRICS_TOKEN = "s3cret-scrape-token"
    assert Client().get("/metrics").status_code == HTTPStatus.FORBIDDEN
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer guess")
    assert wrong.status_code == HTTPStatus.FORBIDDEN
    assert b"gpucloud_" not in wrong.content
    assert _scrape(Client(), HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")["gpucloud_broker_up"]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus package is not installed")
def test_prometheus_scrapes_the_app_and_answers_a_query(live_server, this_host, settings, tmp_path):
    settings.GPUCLOUD_METRICS_ALLOWED_ADDRESSES = []
    settings.GPUCLOUD_METRICS_TOKEN = "prom-token"
    target = live_server.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 2s, scrape_timeout: 2s, evaluation_interval: 2s}\n"
        "scrape_configs:\n"
        "  - job_name: gpucloud\n"
        "    metrics_path: /metrics\n"
        "    authorization: {type: Bearer, credentials: prom-token}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def query(promql: str) -> list:
            try:
                url = f"http://127.0.0.1:{port}/api/v1/query"
                answer = httpx.get(url, params={"query": promql}, timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return []
            return answer.get("data", {}).get("result", [])

        result = wait_until(lambda: query("sum(gpucloud_gpus)"), timeout=90, what="Prometheus to scrape the app")
        assert float(result[0]["value"][1]) == Gpu.objects.filter(enabled=True).count() == 2
        # The scrape authenticated with the bearer token (a 403 would be a failed scrape).
        wait_until(lambda: query('up{job="gpucloud"} == 1'), timeout=60, what="a successful scrape")
    finally:
        stop_group(proc)
        log.close()
