from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from instances.host import gpus
from instances.host.inventory import host_sync
from instances.host.preflight import host_preflight


class Command(BaseCommand):
    help = "Register this machine as a Host and upsert its GPUs (NVML, or the simulated inventory)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--name", help="Host name (default: GPUCLOUD_HOST_NAME).")
        parser.add_argument(
            "--source",
            choices=["auto", "nvml", "simulated"],
            help="Where GPUs come from (default: GPUCLOUD_GPU_SOURCE). 'nvml' fails without a driver.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = host_sync(name=options["name"], source=options["source"])
        except gpus.GpuInventoryError as exc:
            raise CommandError(
                f"{exc}. No GPU driver answers on this machine; set GPUCLOUD_GPU_SOURCE=auto or "
                "simulated to use the simulated inventory."
            ) from exc
        if result.fallback_reason:
            self.stdout.write(f"NVML unavailable ({result.fallback_reason}): using the simulated inventory.")
        self.stdout.write(
            f"Host {result.host.name} ({result.source}): {len(result.created)} GPU(s) created, "
            f"{len(result.updated)} updated, {len(result.unchanged)} unchanged."
        )
        for gpu in result.host.gpus.select_related("gpu_type"):
            kind = "simulated" if gpu.simulated else "real"
            sku = (
                gpu.gpu_type.sku
                if gpu.gpu_type
                else f"no type: add GPU type '{gpus.sku_for(gpu.name)}' in the admin to rent it"
            )
            self.stdout.write(f"  gpu{gpu.index}: {gpu.name} [{sku}, {kind}] {gpu.uuid}")
        # Before the host takes instances: are its runc and NVIDIA toolkit patched?
        preflight = host_preflight(host=result.host)
        self.stdout.write(f"Preflight: {preflight.message}")
