"""GPU inventory and metrics: NVML where a driver answers, else a simulated inventory.

This module imports nothing of Django (settings are passed in), so its NVML path runs
as is on a machine with only Python and nvidia-ml-py: `python instances/host/gpus.py`.
It is the only module that imports `pynvml`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import sys
import threading
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


@dataclass(frozen=True)
class GpuHealth:
    """What the driver says of one GPU's health (instances.host.health judges it).

    None: the board does not report that counter (consumer boards have no ECC, older
    ones no row remapping)."""

    uuid: str
    answering: bool = True
    ecc_uncorrectable_volatile: int | None = None
    ecc_uncorrectable_aggregate: int | None = None
    retired_pages_pending: bool | None = None
    row_remap_pending: bool | None = None
    row_remap_failure: bool | None = None
    # Critical XID codes the driver reported since the last reading (NVML event set).
    xids: tuple[int, ...] = ()
    clock_event_reasons: int = 0
    temperature_c: int | None = None
    slowdown_temperature_c: int | None = None
    simulated: bool = False
    error: str = ""


# NVML's clock-event ("throttle") reasons, as bits (nvmlClocksEventReason*).
REASON_SW_POWER_CAP = 0x04
REASON_HW_SLOWDOWN = 0x08
REASON_SW_THERMAL = 0x20
REASON_HW_THERMAL = 0x40
REASON_HW_POWER_BRAKE = 0x80


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


def _optional(pynvml: Any, read: Any, *args: Any) -> Any:
    """A reading the board may not support (NotSupported) is None, not an error."""
    try:
        return read(*args)
    except pynvml.NVMLError_NotSupported:
        return None


class _XidWatch:
    """The worker's NVML event set for critical XIDs, kept open for the process's life:
    an event set only hears what happens after its registration, so one opened per
    reading would miss every XID between two readings. NVML's init is reference
    counted, so the readings' own init/shutdown pairs leave this one's open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set: Any = None
        self._uuids: dict[Any, str] = {}
        self._pending: dict[str, list[int]] = {}

    def take(self, pynvml: Any, uuids: list[str]) -> dict[str, list[int]]:
        """XID codes of the GPUs in `uuids` reported since they were last taken; those of
        other GPUs wait for their own reading (the gate reads one GPU at a time)."""
        with self._lock:
            if self._set is None:
                pynvml.nvmlInit()  # held until the process ends
                self._set = pynvml.nvmlEventSetCreate()
                for index in range(pynvml.nvmlDeviceGetCount()):
                    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                    uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
                    try:
                        pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, self._set)
                    except pynvml.NVMLError_NotSupported:
                        continue
                    self._uuids[_handle_key(handle)] = uuid
            while True:
                try:
                    event = pynvml.nvmlEventSetWait_v2(self._set, 0)
                except pynvml.NVMLError_Timeout:
                    break
                uuid = self._uuids.get(_handle_key(event.device), "")
                self._pending.setdefault(uuid, []).append(int(event.eventData))
            return {u: self._pending.pop(u) for u in uuids if u in self._pending}


def _handle_key(handle: Any) -> int:
    # Handles are ctypes pointers: two handles of one device hold the same address (a
    # lost device's UUID can no longer be read from its event).
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


_XID_WATCH = _XidWatch()


def xid_watch_start() -> bool:
    """Open this process's XID event set now (a worker starting), so XIDs are heard from
    then on rather than from its first health reading. False without NVML."""
    try:
        pynvml = _nvml()
    except GpuInventoryError:
        return False
    try:
        _XID_WATCH.take(pynvml, [])
        return True
    except pynvml.NVMLError:
        return False
    finally:
        pynvml.nvmlShutdown()


def _one_health(pynvml: Any, handle: Any, *, xids: list[int]) -> GpuHealth:
    uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
    unc = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    volatile = _optional(pynvml, pynvml.nvmlDeviceGetTotalEccErrors, handle, unc, pynvml.NVML_VOLATILE_ECC)
    aggregate = _optional(pynvml, pynvml.nvmlDeviceGetTotalEccErrors, handle, unc, pynvml.NVML_AGGREGATE_ECC)
    pending = _optional(pynvml, pynvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
    remap = _optional(pynvml, pynvml.nvmlDeviceGetRemappedRows, handle)  # (corr, unc, pending, failed)
    reasons = _optional(pynvml, pynvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
    threshold = _optional(
        pynvml, pynvml.nvmlDeviceGetTemperatureThreshold, handle, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
    )
    return GpuHealth(
        uuid=uuid,
        ecc_uncorrectable_volatile=None if volatile is None else int(volatile),
        ecc_uncorrectable_aggregate=None if aggregate is None else int(aggregate),
        retired_pages_pending=None if pending is None else pending == pynvml.NVML_FEATURE_ENABLED,
        row_remap_pending=None if remap is None else bool(remap[2]),
        row_remap_failure=None if remap is None else bool(remap[3]),
        xids=tuple(xids),
        clock_event_reasons=int(reasons or 0),
        temperature_c=int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        slowdown_temperature_c=None if threshold is None else int(threshold),
    )


def nvml_health(*, uuids: list[str], watch_xids: bool = True) -> list[GpuHealth]:
    """The health of each GPU in `uuids` (the host's registered GPUs): ECC, pending page
    retirement, row remapping, critical XIDs, clock-event reasons, temperature against
    its slowdown threshold. A GPU the driver no longer lists or answers about (fallen
    off the bus: XID 79) is `answering=False`. Raises GpuInventoryError without NVML."""
    pynvml = _nvml()
    try:
        xids: dict[str, list[int]] = {}
        note = ""
        if watch_xids:
            try:
                xids = _XID_WATCH.take(pynvml, uuids)
            except pynvml.NVMLError as exc:  # events unsupported (some vGPU / WSL): the rest still counts
                note = f"no XID events: {exc}"
        found: dict[str, GpuHealth] = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            except pynvml.NVMLError:
                continue  # a lost GPU has no UUID to read: it counts as missing below
            try:
                found[uuid] = _one_health(pynvml, handle, xids=xids.get(uuid, []))
            except pynvml.NVMLError as exc:
                found[uuid] = GpuHealth(uuid=uuid, answering=False, xids=tuple(xids.get(uuid, [])), error=str(exc))
        missing = "the driver does not list this GPU (fallen off the bus?)"
        readings = [
            found.get(u) or GpuHealth(uuid=u, answering=False, xids=tuple(xids.get(u, [])), error=missing)
            for u in uuids
        ]
        return [GpuHealth(**{**asdict(r), "error": r.error or note}) if note else r for r in readings]
    except pynvml.NVMLError as exc:
        raise GpuInventoryError(f"NVML error: {exc}") from exc
    finally:
        pynvml.nvmlShutdown()


if __name__ == "__main__":  # a self-check to run on a GPU machine: python instances/host/gpus.py
    try:
        found = nvml_inventory()
        print(
            json.dumps(
                {
                    "inventory": [asdict(g) for g in found],
                    "metrics": [asdict(m) for m in nvml_metrics()],
                    "health": [asdict(h) for h in nvml_health(uuids=[g.uuid for g in found])],
                },
                indent=2,
            )
        )
    except GpuInventoryError as exc:
        print(json.dumps({"error": exc.code, "message": str(exc)}))
        sys.exit(1)
