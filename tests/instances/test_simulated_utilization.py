"""The utilization an operator sets for a simulated GPU: what the idle check and the
metrics read."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from instances.host import gpus
from instances.host.inventory import gpu_metrics_update
from instances.models import Gpu


def test_the_command_sets_and_clears_a_simulated_gpus_utilization(this_host):
    gpu = Gpu.objects.get(host=this_host, index=0)
    directory = settings.GPUCLOUD_SIMULATED_UTILIZATION_DIR
    try:
        call_command("simulate_gpu_utilization", "0", "42")
        assert gpus.simulated_utilization(directory=directory, uuid=gpu.uuid) == 42
        assert gpu_metrics_update(host=this_host) == 1
        gpu.refresh_from_db()
        assert gpu.utilization_percent == 42

        call_command("simulate_gpu_utilization", "0", "off")
        assert gpus.simulated_utilization(directory=directory, uuid=gpu.uuid) is None
        gpu_metrics_update(host=this_host)
        gpu.refresh_from_db()
        assert gpu.utilization_percent is None
    finally:
        gpus.simulated_utilization_set(directory=directory, uuid=gpu.uuid, percent=None)


@pytest.mark.parametrize("args", [("7", "10"), ("0", "101")])
def test_the_command_refuses_an_unknown_gpu_or_a_bad_percentage(this_host, args):
    with pytest.raises(CommandError):
        call_command("simulate_gpu_utilization", *args)
