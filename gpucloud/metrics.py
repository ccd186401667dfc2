"""Prometheus metrics at /metrics: django-prometheus's request metrics and the fleet's own.

The fleet's metrics are read from rows at scrape time (a custom collector, never counters
kept in one web process): every gunicorn worker answers the same numbers, and a restart
loses nothing. GPU readings are the samples the hosts' workers store (beat's gpu-metrics
job); the web process never touches a host. Queue depth is asked of the broker.

Access: a bearer token (GPUCLOUD_METRICS_TOKEN) or a client address in
GPUCLOUD_METRICS_ALLOWED_ADDRESSES (networks; loopback by default); anything else is 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, DecimalField, F, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from billing.models import LedgerEntry, MeterMark, UsageRecord
from gpucloud.celery import app as celery_app
from instances.access.authentication import client_ip
from instances.models import Gpu, Host, Instance, InstanceEvent

logger = logging.getLogger(__name__)

# Launch → running, seconds (an image pull can take minutes).
READY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
CHARGE_KINDS = (LedgerEntry.Kind.GPU_USAGE, LedgerEntry.Kind.STORAGE)


def _gpu_metrics() -> Iterator[Any]:
    labels = ["host", "gpu_type", "simulated"]
    total = GaugeMetricFamily("gpucloud_gpus", "GPUs registered (enabled)", labels=labels)
    busy = GaugeMetricFamily("gpucloud_gpus_busy", "GPUs held by an instance", labels=labels)
    rows = (
        Gpu.objects.filter(enabled=True)
        .values("host__name", "gpu_type__sku", "simulated")
        .annotate(
            n=Count("id", distinct=True),
            held=Count("instances", filter=Q(instances__status__in=Instance.GPU_HOLDING), distinct=True),
        )
        .order_by("host__name", "gpu_type__sku")
    )
    for row in rows:
        key = [row["host__name"], row["gpu_type__sku"] or "", "true" if row["simulated"] else "false"]
        total.add_metric(key, row["n"])
        busy.add_metric(key, row["held"])
    yield total
    yield busy

    per_gpu = ["host", "index", "uuid", "gpu_type"]
    families = {
        "utilization_percent": GaugeMetricFamily(
            "gpucloud_gpu_utilization_percent", "GPU utilization, last sample", labels=per_gpu
        ),
        "memory_used_mb": GaugeMetricFamily(
            "gpucloud_gpu_memory_used_bytes", "GPU memory used, last sample", labels=per_gpu
        ),
        "memory_mb": GaugeMetricFamily("gpucloud_gpu_memory_total_bytes", "GPU memory", labels=per_gpu),
        "power_w": GaugeMetricFamily("gpucloud_gpu_power_watts", "GPU power draw, last sample", labels=per_gpu),
        "temperature_c": GaugeMetricFamily(
            "gpucloud_gpu_temperature_celsius", "GPU temperature, last sample", labels=per_gpu
        ),
    }
    age = GaugeMetricFamily("gpucloud_gpu_sample_age_seconds", "Age of the GPU's last sample", labels=per_gpu)
    now = timezone.now()
    fields = ["host__name", "index", "uuid", "gpu_type__sku", "metrics_at", *families]
    for gpu in Gpu.objects.filter(enabled=True).values(*fields).order_by("host__name", "index"):
        key = [gpu["host__name"], str(gpu["index"]), gpu["uuid"], gpu["gpu_type__sku"] or ""]
        for field, family in families.items():
            value = gpu[field]
            if value is None:
                continue
            family.add_metric(key, float(value) * (1024 * 1024 if field.endswith("_mb") else 1))
        if gpu["metrics_at"] is not None:
            age.add_metric(key, (now - gpu["metrics_at"]).total_seconds())
    yield from families.values()
    yield age


def _instance_metrics() -> Iterator[Any]:
    by_status = GaugeMetricFamily("gpucloud_instances", "Instances by status", labels=["status"])
    counts = dict(Instance.objects.values_list("status").annotate(n=Count("id")).order_by())
    for status in Instance.Status.values:
        by_status.add_metric([status], counts.get(status, 0))
    yield by_status

    launches = CounterMetricFamily("gpucloud_launches", "Instances launched", labels=["gpu_type"])
    for sku, n in Instance.objects.values_list("gpu_type__sku").annotate(n=Count("id")).order_by("gpu_type__sku"):
        launches.add_metric([sku], n)
    yield launches
    failures = CounterMetricFamily("gpucloud_instance_failures", "Launches and starts that ended failed")
    failures.add_metric([], InstanceEvent.objects.filter(kind=InstanceEvent.Kind.FAILED).count())
    yield failures

    # Launch → running: from the row's creation to its first `started` event.
    first_started = Min("events__at", filter=Q(events__kind=InstanceEvent.Kind.STARTED))
    ready = Instance.objects.annotate(ready_at=first_started).filter(ready_at__isnull=False)
    ready = ready.annotate(seconds=F("ready_at") - F("created_at"))
    buckets = {f"le{b}": Count("id", filter=Q(seconds__lte=timedelta(seconds=b))) for b in READY_BUCKETS}
    row = ready.aggregate(n=Count("id"), total=Sum("seconds"), **buckets)
    histogram = HistogramMetricFamily(
        "gpucloud_launch_to_ready_seconds", "From launch to running (first start of each instance)"
    )
    histogram.add_metric(
        [],
        buckets=[(str(float(b)), row[f"le{b}"]) for b in READY_BUCKETS] + [("+Inf", row["n"])],
        sum_value=row["total"].total_seconds() if row["total"] else 0.0,
    )
    yield histogram


def _queue_metrics() -> Iterator[Any]:
    depth = GaugeMetricFamily("gpucloud_queue_depth", "Tasks waiting in a host's Celery queue", labels=["queue"])
    up = GaugeMetricFamily("gpucloud_broker_up", "1 when the broker answered this scrape")
    try:
        with celery_app.connection_for_read() as conn:
            channel = conn.default_channel
            for name in Host.objects.order_by("name").values_list("name", flat=True):
                queue = f"host.{name}"
                try:
                    waiting = channel.queue_declare(queue=queue, passive=True).message_count
                except conn.channel_errors:  # Redis keeps no empty queue: "not found" is 0
                    waiting = 0
                depth.add_metric([queue], waiting)
        up.add_metric([], 1)
    except Exception:  # the broker down must not take /metrics down with it
        logger.warning("metrics: the broker did not answer", exc_info=True)
        up.add_metric([], 0)
    yield depth
    yield up


def _money_metrics() -> Iterator[Any]:
    now = timezone.now()
    last_run = MeterMark.objects.order_by("-at").values_list("at", flat=True).first()
    meter = GaugeMetricFamily("gpucloud_meter_last_run_age_seconds", "Seconds since the meter last ran")
    if last_run is not None:
        meter.add_metric([], (now - last_run).total_seconds())
    yield meter
    oldest = UsageRecord.objects.filter(ended_at__isnull=True).aggregate(m=Min("billed_until"))["m"]
    lag = GaugeMetricFamily("gpucloud_meter_lag_seconds", "How far the oldest open segment's billing trails now")
    lag.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
    yield lag

    zero = Coalesce(Sum("amount_usd"), 0, output_field=DecimalField(max_digits=24, decimal_places=12))
    totals = dict(LedgerEntry.objects.values_list("kind").annotate(total=zero).order_by())
    ledger = CounterMetricFamily(
        "gpucloud_ledger_usd", "Sum of ledger entries by kind (charges negative)", labels=["kind"]
    )
    for kind in LedgerEntry.Kind.values:
        ledger.add_metric([kind], float(totals.get(kind, 0)))
    yield ledger
    revenue = CounterMetricFamily("gpucloud_revenue_usd", "Charged for GPU time and storage", labels=["kind"])
    for kind in CHARGE_KINDS:
        revenue.add_metric([kind], float(-totals.get(kind, 0)))
    yield revenue


class FleetCollector(Collector):
    def collect(self) -> Iterator[Any]:
        yield from _gpu_metrics()
        yield from _instance_metrics()
        yield from _queue_metrics()
        yield from _money_metrics()


_fleet = CollectorRegistry(auto_describe=False)
_fleet.register(FleetCollector())


def metrics_allowed(request: HttpRequest) -> bool:
    """A matching bearer token, or a client address in the allow-list."""
    token = settings.GPUCLOUD_METRICS_TOKEN
    header = request.headers.get("authorization", "")
    if token and header.lower().startswith("bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(net, strict=False) for net in settings.GPUCLOUD_METRICS_ALLOWED_ADDRESSES
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return HttpResponse("Forbidden: a bearer token or an allowed address is needed.\n", status=403)
    requests = REGISTRY
    if settings.PROMETHEUS_MULTIPROC_DIR:  # gunicorn's workers' request metrics, summed
        requests = CollectorRegistry()
        multiprocess.MultiProcessCollector(requests)  # type: ignore[no-untyped-call]
    # Two expositions back to back are one valid exposition (no name is in both).
    body = generate_latest(requests) + generate_latest(_fleet)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
