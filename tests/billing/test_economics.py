"""Operator economics: revenue per GPU from its billed segments, energy from its power
samples at the electricity price, amortized hardware, margin; the admin page, its chart
(Chart.js from our static files) and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest

from billing import services
from billing.economics import gpu_economics
from billing.economics_models import OperatorCosts
from instances.models import Gpu, GpuPowerSample
from tests.billing.helpers import event, instance_for

START = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.fixture
def january(alice, this_host, gpu_types, settings):
    """The RTX 5090 ran 2 h for alice and drew 300 W then 500 W over 10 h in January 2026."""
    settings.GPUCLOUD_ELECTRICITY_USD_PER_KWH = Decimal("0.25")
    settings.GPUCLOUD_HARDWARE_USD_PER_GPU_MONTH = Decimal("100")
    settings.GPUCLOUD_METRICS_SECONDS = 0  # the span is exactly first to last sample here
    gpu = Gpu.objects.get(host=this_host, gpu_type__sku="rtx-5090")
    instance = instance_for(alice, gpu_types["rtx-5090"])
    event(instance, "started", START, gpu=gpu.uuid)
    event(instance, "ended", START + timedelta(hours=2))
    services.meter_run(now=START + timedelta(hours=3))
    GpuPowerSample.objects.create(gpu=gpu, at=START, power_w=Decimal("300"))
    GpuPowerSample.objects.create(gpu=gpu, at=START + timedelta(hours=10), power_w=Decimal("500"))
    GpuPowerSample.objects.create(gpu=gpu, at=START + timedelta(days=40), power_w=Decimal("900"))  # February
    return gpu


def test_revenue_energy_hardware_and_margin_per_gpu_and_host(january, this_host):
    report = gpu_economics(month="2026-01")
    rows = {row["uuid"]: row for row in report["rows"]}
    five = rows[january.uuid]
    assert five["revenue_usd"] == Decimal("2.98")  # 2 h at $1.49
    assert five["busy_hours"] == Decimal("2.00")
    assert five["energy_kwh"] == Decimal("4.000")  # 400 W mean over 10 h
    assert five["energy_usd"] == Decimal("1.00")  # at $0.25 / kWh
    assert five["hardware_usd"] == Decimal("100.00")  # a whole month
    assert five["margin_usd"] == Decimal("2.98") - Decimal("1.00") - Decimal("100.00")
    assert five["utilization_percent"] == Decimal("0.3")  # 2 h of 744
    other = next(r for uuid, r in rows.items() if uuid != january.uuid)
    assert (other["revenue_usd"], other["energy_kwh"]) == (Decimal("0.00"), Decimal("0.000"))
    [host] = report["hosts"]
    assert (host["host"], host["gpus"]) == (this_host.name, 2)
    assert host["revenue_usd"] == Decimal("2.98")
    assert host["margin_usd"] == Decimal("2.98") - Decimal("1.00") - Decimal("200.00")
    assert gpu_economics(month="2026-02")["total"]["revenue_usd"] == 0


def test_the_admin_page_charts_and_exports_csv(january, client, olga, alice):
    client.force_login(olga)
    page = client.get("/admin/billing/usagerecord/economics/", {"month": "2026-01"})
    assert page.status_code == HTTPStatus.OK
    body = page.content.decode()
    assert "vendor/chartjs/chart.umd.min.js" in body  # served by us, no CDN
    assert "$2.98" in body
    assert "economics-data" in body
    assert "Economics per GPU and host" in client.get("/admin/billing/usagerecord/").content.decode()
    exported = client.get("/admin/billing/usagerecord/economics/", {"month": "2026-01", "format": "csv"})
    assert exported["Content-Disposition"] == 'attachment; filename="economics-2026-01.csv"'
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    mine = next(r for r in rows if r["uuid"] == january.uuid)
    assert (mine["revenue_usd"], mine["energy_usd"], mine["margin_usd"]) == ("2.98", "1.00", "-98.02")
    assert client.get("/admin/billing/usagerecord/economics/", {"month": "jan"}).status_code == HTTPStatus.BAD_REQUEST
    client.force_login(alice)  # not staff: the admin's login page, no numbers
    assert "$2.98" not in client.get("/admin/billing/usagerecord/economics/", {"month": "2026-01"}).content.decode()


def test_prices_set_in_the_admin_win_over_the_settings(january, client, olga):
    client.force_login(olga)
    added = client.post(
        "/admin/billing/operatorcosts/add/", {"electricity_usd_per_kwh": "0.50", "hardware_usd_per_gpu_month": "10"}
    )
    assert added.status_code == HTTPStatus.FOUND, added.content
    five = next(r for r in gpu_economics(month="2026-01")["rows"] if r["uuid"] == january.uuid)
    assert (five["energy_usd"], five["hardware_usd"]) == (Decimal("2.00"), Decimal("10.00"))
    assert five["margin_usd"] == Decimal("2.98") - Decimal("2.00") - Decimal("10.00")
    page = client.get("/admin/billing/usagerecord/economics/", {"month": "2026-01"}).content.decode()
    assert "$0.5000 per kWh" in page
    refused = client.post(
        "/admin/billing/operatorcosts/add/", {"electricity_usd_per_kwh": "-1", "hardware_usd_per_gpu_month": "0"}
    )
    assert refused.status_code == HTTPStatus.OK  # the form again, with the error; nothing saved
    assert OperatorCosts.objects.count() == 1
