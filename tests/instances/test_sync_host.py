from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from instances.host import gpus
from instances.host.inventory import gpu_metrics_update
from instances.models import Gpu, GpuPowerSample, Host


@pytest.mark.django_db
def test_sync_host_registers_the_simulated_inventory_once(gpu_types, capsys):
    call_command("sync_host", name="ws1", source="simulated")
    call_command("sync_host", name="ws1", source="simulated")

    host = Host.objects.get(name="ws1")
    assert host.queue == "host.ws1"
    assert host.last_heartbeat_at is not None
    found = list(Gpu.objects.filter(host=host).order_by("index").values_list("index", "gpu_type__sku", "simulated"))
    assert found == [(0, "rtx-5090", True), (1, "rtx-pro-6000", True)]
    out = capsys.readouterr().out
    assert "2 GPU(s) created" in out
    assert "0 GPU(s) created, 0 updated, 2 unchanged" in out


@pytest.mark.django_db
def test_sync_host_keeps_gpu_rows_by_uuid_when_the_inventory_is_resynced(gpu_types):
    call_command("sync_host", name="ws1", source="simulated")
    before = dict(Gpu.objects.values_list("uuid", "pk"))
    call_command("sync_host", name="ws1", source="simulated")
    assert dict(Gpu.objects.values_list("uuid", "pk")) == before


def _nvml_available() -> bool:
    try:
        gpus.nvml_inventory()
    except gpus.GpuInventoryError:
        return False
    return True


@pytest.mark.django_db
def test_sync_host_says_nvml_is_unavailable_and_falls_back_only_when_configured(gpu_types, capsys):
    if _nvml_available():
        pytest.fail("this test checks a machine without an NVIDIA driver; run it with -m 'not gpu' elsewhere")
    with pytest.raises(CommandError, match="NVML is unavailable"):
        call_command("sync_host", name="ws2", source="nvml")
    assert not Host.objects.filter(name="ws2").exists()

    call_command("sync_host", name="ws2", source="auto")
    assert "NVML unavailable" in capsys.readouterr().out
    assert Gpu.objects.filter(host__name="ws2", simulated=True).count() == 2


@pytest.mark.gpu
@pytest.mark.django_db
def test_sync_host_registers_real_gpus_from_nvml(gpu_types):
    call_command("sync_host", name="gpuhost", source="nvml")
    real = Gpu.objects.filter(host__name="gpuhost")
    assert real.exists()
    assert not real.filter(simulated=True).exists()
    assert all(g.uuid.startswith("GPU-") and g.memory_mb > 0 for g in real)


@pytest.mark.gpu
@pytest.mark.django_db
def test_metrics_of_real_gpus_append_power_samples_for_economics(gpu_types):
    call_command("sync_host", name="gpuhost", source="nvml")
    host = Host.objects.get(name="gpuhost")
    assert gpu_metrics_update(host=host) == Gpu.objects.filter(host=host).count()
    samples = GpuPowerSample.objects.filter(gpu__host=host)
    assert samples.count() == Gpu.objects.filter(host=host).count()
    assert all(s.power_w > 0 for s in samples)
