"""What a host's worker reports in each heartbeat, read from its own machine: whether
its Docker engine answers, the GPUs it sees, its CPUs and memory, the free disk under
its data root, and which images it holds. And the worker-side timer that beats.

The timer is a thread of the worker's main process, not a task on the host's queue:
a pool busy with long pulls must not look like a dead host, and a beat that waits in
a queue behind other work says nothing about now. A worker that dies stops beating.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from instances.errors import InfrastructureError
from instances.host import gpus
from instances.host.runtime import DockerRuntime, runtime_for

logger = logging.getLogger(__name__)


def _free_disk_bytes(root: Path) -> int | None:
    # The data root may not exist yet on a new host: measure the filesystem it will be on.
    for candidate in (root, *root.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return None


def _gpus_seen(*, host_name: str) -> tuple[list[str], str]:
    source = settings.GPUCLOUD_GPU_SOURCE
    if source in ("nvml", "auto"):
        try:
            return [g.uuid for g in gpus.nvml_inventory()], "nvml"
        except gpus.GpuInventoryError:
            if source == "nvml":
                return [], "nvml"
    declared = gpus.simulated_inventory(host_name=host_name, declared=settings.GPUCLOUD_SIMULATED_GPUS)
    return [g.uuid for g in declared], "simulated"


def host_facts(*, host: Any, images: list[str], runtime: DockerRuntime | None = None) -> dict[str, Any]:
    """One heartbeat's facts about `host` (this machine). Never raises for an engine that
    does not answer: that is a fact (`engine_ok` false, `engine_error` its code).

    `images`: the images to look for (the enabled templates'); `images_present` lists
    those the engine holds, with their sizes."""
    facts: dict[str, Any] = {"engine_ok": False, "engine_error": "", "images_present": {}}
    try:
        engine = runtime_for(host=host, runtime=runtime)
        info = engine.engine_info()
        facts.update(engine_ok=True, cpus=int(info.get("NCPU") or 0), memory_mb=int(info.get("MemTotal") or 0) >> 20)
        for image in images:
            size = engine.image_size(image)
            if size is not None:
                facts["images_present"][image] = size
    except InfrastructureError as exc:
        facts["engine_error"] = exc.code
        facts.update(cpus=os.cpu_count() or 0)
    uuids, source = _gpus_seen(host_name=host.name)
    facts.update(gpus_seen=uuids, gpu_source=source, disk_free_bytes=_free_disk_bytes(settings.GPUCLOUD_DATA_ROOT))
    return facts


class HeartbeatTimer(threading.Thread):
    """Calls `beat()` every `every` seconds until `stop()`; an error is logged and the
    next beat tried (a beat that fails is a missed beat, which is what liveness counts)."""

    def __init__(self, *, beat: Callable[[], Any], every: float) -> None:
        super().__init__(name="gpucloud-heartbeat", daemon=True)
        self.beat, self.every = beat, every
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                close_old_connections()  # a connection PostgreSQL dropped is opened again
                self.beat()
            except Exception:  # the thread must outlive a database or engine outage
                logger.exception("heartbeat failed")
            self._stopped.wait(self.every)

    def stop(self) -> None:
        self._stopped.set()
