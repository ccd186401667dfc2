"""GPU inventory and metrics: NVML where a driver answers, else a simulated inventory.

This module imports nothing of Django (settings are passed in), so its NVML path runs
as is on a machine with only Python and nvidia-ml-py: `python instances/host/gpus.py`.
It is the only module that imports `pynvml`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class GpuInventoryError(Exception):
    """NVML could not be used (no library, no driver, or a driver error)."""

    code = "gpus:nvml-unavailable"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_mb: int
    simulated: bool
    sku: str = ""
    driver_version: str = ""


@dataclass(frozen=True)
class GpuMetrics:
    uuid: str
    utilization_percent: int | None = None
    memory_used_mb: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    simulated: bool = False
    note: str = field(default="")


# Model name (as NVML reports it) → SKU customers choose. Unknown models get a slug.
_SKU_BY_NAME = {
    "NVIDIA GeForce RTX 5090": "rtx-5090",
    "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": "rtx-pro-6000",
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": "rtx-pro-6000",
    "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition": "rtx-pro-6000",
    "NVIDIA H100 80GB HBM3": "h100-80gb",
    "NVIDIA H200": "h200",
}


def sku_for(name: str) -> str:
    if name in _SKU_BY_NAME:
        return _SKU_BY_NAME[name]
    slug = name.lower().replace("nvidia", "").strip()
    return "-".join("".join(ch if ch.isalnum() else " " for ch in slug).split())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml():
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise GpuInventoryError("nvidia-ml-py is not installed") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise GpuInventoryError(f"NVML is unavailable: {exc}") from exc
    return pynvml


def nvml_inventory() -> list[GpuInfo]:
    """The GPUs the NVIDIA driver reports. Raises GpuInventoryError without a driver."""
    pynvml = _nvml()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=name,
                    memory_mb=int(memory.total // (1024 * 1024)),
                    simulated=False,
                    sku=sku_for(name),
                    driver_version=driver,
                )
            )
        return gpus
    except pynvml.NVMLError as exc:
        raise GpuInventoryError(f"NVML error: {exc}") from exc
    finally:
        pynvml.nvmlShutdown()


def simulated_inventory(*, host_name: str, declared: list[dict[str, Any]]) -> list[GpuInfo]:
    """The declared inventory. UUIDs are stable per host and index, so re-syncing upserts."""
    gpus = []
    for entry in declared:
        index = int(entry["index"])
        digest = hashlib.sha256(f"{host_name}/{index}".encode()).hexdigest()
        uuid = "GPU-SIM-" + "-".join((digest[:8], digest[8:12], digest[12:16], digest[16:20], digest[20:32]))
        gpus.append(
            GpuInfo(
                index=index,
                uuid=uuid,
                name=str(entry["name"]),
                memory_mb=int(entry.get("memory_mb", 0)),
                simulated=True,
                sku=str(entry.get("sku") or sku_for(str(entry["name"]))),
            )
        )
    return gpus


def discover(*, source: str, host_name: str, declared: list[dict[str, Any]]) -> tuple[list[GpuInfo], str]:
    """The host's GPUs and where they came from ("nvml" or "simulated").

    `source` is "nvml" (fail without a driver), "simulated", or "auto" (NVML, else the
    declared inventory). Raises GpuInventoryError when NVML is required and missing.
    """
    if source == "simulated":
        return simulated_inventory(host_name=host_name, declared=declared), "simulated"
    try:
        return nvml_inventory(), "nvml"
    except GpuInventoryError:
        if source == "nvml":
            raise
    return simulated_inventory(host_name=host_name, declared=declared), "simulated"


def nvml_metrics() -> list[GpuMetrics]:
    """Utilization, memory used, temperature and power of every real GPU."""
    pynvml = _nvml()
    try:
        metrics = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                power_w: float | None = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except pynvml.NVMLError:  # not every board reports power
                power_w = None
            metrics.append(
                GpuMetrics(
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    utilization_percent=int(util.gpu),
                    memory_used_mb=int(memory.used // (1024 * 1024)),
                    temperature_c=int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
                    power_w=power_w,
                )
            )
        return metrics
    except pynvml.NVMLError as exc:
        raise GpuInventoryError(f"NVML error: {exc}") from exc
    finally:
        pynvml.nvmlShutdown()


def simulated_utilization(*, directory: Path, uuid: str) -> int | None:
    """The utilization set for a simulated GPU (a file `<directory>/<uuid>` holding a
    percentage), or None when none is set."""
    try:
        text = (directory / uuid).read_text().strip()
    except OSError:
        return None
    try:
        return max(0, min(100, int(text)))
    except ValueError:
        return None


def simulated_utilization_set(*, directory: Path, uuid: str, percent: int | None) -> None:
    """Set (or with None clear) the utilization a simulated GPU reports."""
    path = directory / uuid
    if percent is None:
        path.unlink(missing_ok=True)
        return
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{max(0, min(100, int(percent)))}\n")
    tmp.replace(path)  # atomic: a reader never sees half a number


def simulated_metrics(inventory: list[GpuInfo], *, directory: Path | None = None) -> list[GpuMetrics]:
    """Simulated GPUs have no sensors: only the utilization set for them, if any."""
    metrics = []
    for g in inventory:
        percent = simulated_utilization(directory=directory, uuid=g.uuid) if directory else None
        note = "simulated GPU: utilization as set" if percent is not None else "simulated GPU: no metrics"
        metrics.append(GpuMetrics(uuid=g.uuid, utilization_percent=percent, simulated=True, note=note))
    return metrics


if __name__ == "__main__":  # a self-check to run on a GPU machine: python instances/host/gpus.py
    try:
        found = nvml_inventory()
        print(
            json.dumps(
                {"inventory": [asdict(g) for g in found], "metrics": [asdict(m) for m in nvml_metrics()]}, indent=2
            )
        )
    except GpuInventoryError as exc:
        print(json.dumps({"error": exc.code, "message": str(exc)}))
        sys.exit(1)
