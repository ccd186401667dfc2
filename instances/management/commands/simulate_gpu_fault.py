"""Tell the simulated inventory to report a GPU fault (or to stop reporting it).

    manage.py simulate_gpu_fault --gpu 0 --xid 79
    manage.py simulate_gpu_fault --gpu 1 --ecc-volatile 2
    manage.py simulate_gpu_fault --gpu 0 --throttle thermal --temperature 91 --slowdown-temperature 90
    manage.py simulate_gpu_fault --gpu 0 --clear        (or --clear-all)

The host's worker reads the file (GPUCLOUD_SIMULATED_GPU_FAULTS_FILE) at its next
health check: before the next rental of that GPU and every GPUCLOUD_GPU_HEALTH_SECONDS.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from instances.host.gpus import REASON_HW_POWER_BRAKE, REASON_HW_SLOWDOWN, REASON_HW_THERMAL
from instances.host.health import faults_load, faults_save

THROTTLES = {"thermal": REASON_HW_THERMAL, "power": REASON_HW_POWER_BRAKE, "hw": REASON_HW_SLOWDOWN}


class Command(BaseCommand):
    help = "Make a simulated GPU of this host report a fault (XID, ECC, throttling, ...) or clear it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=None, help="host name (default: GPUCLOUD_HOST_NAME)")
        parser.add_argument("--gpu", type=int, help="the GPU's index on the host")
        parser.add_argument("--xid", type=int, action="append", default=[], help="a critical XID (repeatable)")
        parser.add_argument("--ecc-volatile", type=int, help="uncorrectable ECC errors since boot")
        parser.add_argument("--ecc-aggregate", type=int, help="uncorrectable ECC errors in the GPU's life")
        parser.add_argument("--retired-pages-pending", action="store_true")
        parser.add_argument("--row-remap-pending", action="store_true")
        parser.add_argument("--row-remap-failure", action="store_true")
        parser.add_argument("--throttle", choices=sorted(THROTTLES), action="append", default=[])
        parser.add_argument("--temperature", type=int, help="°C")
        parser.add_argument("--slowdown-temperature", type=int, help="the GPU's slowdown threshold, °C")
        parser.add_argument("--not-answering", action="store_true", help="the device does not answer")
        parser.add_argument("--since", help="ISO time the fault began (default: when first read)")
        parser.add_argument("--clear", action="store_true", help="the GPU reports healthy again")
        parser.add_argument("--clear-all", action="store_true", help="every GPU of the host reports healthy")

    def handle(self, *args: Any, **opts: Any) -> None:
        host = opts["host"] or settings.GPUCLOUD_HOST_NAME
        path = settings.GPUCLOUD_SIMULATED_GPU_FAULTS_FILE
        faults = faults_load(path)
        if opts["clear_all"]:
            faults.pop(host, None)
        elif opts["gpu"] is None:
            raise CommandError("--gpu INDEX is required (or --clear-all)")
        elif opts["clear"]:
            faults.get(host, {}).pop(str(opts["gpu"]), None)
        else:
            faults.setdefault(host, {})[str(opts["gpu"])] = self._fault(opts)
        faults_save(path, faults)
        self.stdout.write(f"{path}: {faults.get(host, {}) or 'every GPU of ' + host + ' healthy'}")

    def _fault(self, opts: dict[str, Any]) -> dict[str, Any]:
        fault: dict[str, Any] = {}
        if opts["since"] and parse_datetime(opts["since"]) is None:
            raise CommandError(f"--since {opts['since']!r} is not an ISO time")
        fault["since"] = opts["since"] or timezone.now().isoformat()
        if opts["xid"]:
            fault["xids"] = opts["xid"]
        for key in ("ecc_volatile", "ecc_aggregate"):
            if opts[key] is not None:
                fault[f"ecc_uncorrectable_{key.split('_')[1]}"] = opts[key]
        for key in ("retired_pages_pending", "row_remap_pending", "row_remap_failure"):
            if opts[key]:
                fault[key] = True
        if opts["throttle"]:
            fault["clock_event_reasons"] = sum(THROTTLES[t] for t in set(opts["throttle"]))
        if opts["temperature"] is not None:
            fault["temperature_c"] = opts["temperature"]
        if opts["slowdown_temperature"] is not None:
            fault["slowdown_temperature_c"] = opts["slowdown_temperature"]
        if opts["not_answering"]:
            fault["answering"] = False
            fault["error"] = "simulated: the device does not answer"
        if len(fault) == 1:
            raise CommandError("name a fault (--xid, --ecc-volatile, --throttle, ...) or --clear")
        return fault
