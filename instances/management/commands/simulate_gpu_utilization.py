"""Set the utilization a simulated GPU of this host reports (to try idle rules without a GPU)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from instances.host import gpus
from instances.models import Gpu


class Command(BaseCommand):
    help = "Set (or with 'off' clear) the utilization a simulated GPU of this host reports."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("index", type=int, help="the GPU's index on this host")
        parser.add_argument("percent", help="0-100, or 'off'")

    def handle(self, *args: Any, index: int, percent: str, **options: Any) -> None:
        gpu = Gpu.objects.filter(host__name=settings.GPUCLOUD_HOST_NAME, index=index).first()
        if gpu is None or not gpu.simulated:
            raise CommandError(f"no simulated GPU {index} on host {settings.GPUCLOUD_HOST_NAME}")
        value = None if percent == "off" else int(percent)
        if value is not None and not 0 <= value <= 100:
            raise CommandError("percent is 0-100 or 'off'")
        gpus.simulated_utilization_set(
            directory=settings.GPUCLOUD_SIMULATED_UTILIZATION_DIR, uuid=gpu.uuid, percent=value
        )
        self.stdout.write(f"{gpu}: utilization {'cleared' if value is None else f'{value}%'}")
