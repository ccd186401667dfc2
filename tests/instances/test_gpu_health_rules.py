"""The GPU health rules without containers: what a reading counts as a fault, what the
simulated inventory is told to report, NVML's absence, and the credit's arithmetic."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing.models import UsageRecord
from billing.services import fault_credit_amount
from instances.host import gpus
from instances.host.health import faults_load, findings, simulated_reading


def codes(reading: gpus.GpuHealth, **kwargs) -> list[str]:
    return [f.code for f in findings(reading, **kwargs)]


def test_a_healthy_reading_has_no_findings():
    reading = gpus.GpuHealth(
        uuid="GPU-1",
        ecc_uncorrectable_volatile=0,
        ecc_uncorrectable_aggregate=0,
        retired_pages_pending=False,
        row_remap_pending=False,
        row_remap_failure=False,
        clock_event_reasons=gpus.REASON_SW_POWER_CAP | 0x01,  # power cap under load and idle: normal
        temperature_c=60,
        slowdown_temperature_c=90,
    )
    assert findings(reading) == []


def test_each_fault_of_a_reading_is_named():
    reading = gpus.GpuHealth(
        uuid="GPU-1",
        answering=False,
        error="GPU is lost",
        xids=(13, 79, 31, 94),
        ecc_uncorrectable_volatile=1,
        row_remap_failure=True,
        row_remap_pending=True,
        retired_pages_pending=True,
        clock_event_reasons=gpus.REASON_HW_THERMAL | gpus.REASON_HW_POWER_BRAKE | gpus.REASON_HW_SLOWDOWN,
        temperature_c=92,
        slowdown_temperature_c=90,
    )
    assert codes(reading) == [
        "not-answering",
        "xid-79",
        "xid-94",  # 13 and 31 are the customer program's own errors, not the GPU's
        "ecc-uncorrectable",
        "row-remap-failure",
        "row-remap-pending",
        "retired-pages-pending",
        "thermal-slowdown",
        "power-slowdown",
        "hw-slowdown",
        "temperature-high",
    ]
    assert {f.family for f in findings(reading)} >= {"xid", "not-answering"}


def test_lifetime_ecc_errors_count_only_above_the_accepted_baseline():
    reading = gpus.GpuHealth(uuid="GPU-1", ecc_uncorrectable_volatile=0, ecc_uncorrectable_aggregate=3)
    assert codes(reading) == ["ecc-uncorrectable"]
    assert codes(reading, ecc_aggregate_baseline=3) == []
    assert codes(gpus.GpuHealth(uuid="GPU-1", temperature_c=86, slowdown_temperature_c=90), temperature_margin_c=5) == [
        "temperature-high"
    ]


def test_the_command_writes_what_the_simulated_inventory_reports(tmp_path, settings):
    settings.GPUCLOUD_SIMULATED_GPU_FAULTS_FILE = tmp_path / "faults.json"
    call_command("simulate_gpu_fault", host="h1", gpu=1, xid=[79], since="2026-12-01T10:00:00+00:00")
    call_command("simulate_gpu_fault", host="h1", gpu=0, throttle=["thermal", "power"])
    faults = faults_load(settings.GPUCLOUD_SIMULATED_GPU_FAULTS_FILE)["h1"]
    assert faults["1"] == {"since": "2026-12-01T10:00:00+00:00", "xids": [79]}
    reading = simulated_reading(uuid="GPU-SIM-1", fault=faults["1"])
    assert (reading.xids, reading.simulated, codes(reading)) == ((79,), True, ["xid-79"])
    throttled = simulated_reading(uuid="GPU-SIM-0", fault=faults["0"])
    assert codes(throttled) == ["thermal-slowdown", "power-slowdown"]

    call_command("simulate_gpu_fault", host="h1", gpu=1, clear=True)
    assert set(faults_load(settings.GPUCLOUD_SIMULATED_GPU_FAULTS_FILE)["h1"]) == {"0"}
    with pytest.raises(CommandError, match="name a fault"):
        call_command("simulate_gpu_fault", host="h1", gpu=1)
    with pytest.raises(CommandError, match="not an ISO time"):
        call_command("simulate_gpu_fault", host="h1", gpu=1, xid=[79], since="yesterday")
    call_command("simulate_gpu_fault", host="h1", clear_all=True)
    assert faults_load(settings.GPUCLOUD_SIMULATED_GPU_FAULTS_FILE) == {}


def test_without_an_nvidia_driver_the_nvml_health_path_says_so():
    # This machine has no NVIDIA driver: the NVML path must fail with its own error,
    # which the watch turns into "not answering" for real GPUs (and never for simulated ones).
    with pytest.raises(gpus.GpuInventoryError):
        gpus.nvml_health(uuids=["GPU-real"])


def test_the_credit_is_the_rate_for_the_seconds_from_the_fault_to_the_end():
    start = timezone.now().replace(microsecond=0)
    usage = UsageRecord(
        started_at=start,
        ended_at=start + timedelta(seconds=100, milliseconds=700),
        duration_seconds=100,
        rate_usd=Decimal("1.49"),
        rate_period_seconds=3600,
        minimum_seconds=60,
        cost_usd=Decimal("0.04"),
    )
    # 100 s at $1.49/h; fault after 40.9 s: 60 whole seconds credited = $0.024833 -> $0.02.
    assert fault_credit_amount(usage=usage, fault_at=start + timedelta(seconds=40, milliseconds=900)) == (
        60,
        Decimal("0.02"),
    )
    # A fault before the segment began: all of it, never more than it cost.
    assert fault_credit_amount(usage=usage, fault_at=start - timedelta(hours=1)) == (100, Decimal("0.04"))
    assert fault_credit_amount(usage=usage, fault_at=start + timedelta(seconds=200)) == (0, Decimal("0.00"))
    assert settings.GPUCLOUD_GPU_FAULT_STOP == ["not-answering", "xid", "ecc-uncorrectable", "row-remap-failure"]
