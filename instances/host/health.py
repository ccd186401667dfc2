"""Judging a GPU's health, and the faults the simulated inventory is told to report.

No Django here either: the policy (which faults stop an instance) and the fault file's
path are passed in. A *finding* is one fault code; instances.services.health records
them, quarantines the GPU and acts on the instance renting it.

The simulated inventory reads its faults from a JSON file (GPUCLOUD_SIMULATED_GPU_FAULTS_FILE,
written by `manage.py simulate_gpu_fault`): `{"<host>": {"<gpu index>": {...}}}`, where the
inner object takes GpuHealth's fields (`xids`, `ecc_uncorrectable_volatile`,
`clock_event_reasons`, `answering`, ...) and `since` (ISO time the fault began; when
absent, the first reading that sees it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from instances.host.gpus import (
    REASON_HW_POWER_BRAKE,
    REASON_HW_SLOWDOWN,
    REASON_HW_THERMAL,
    REASON_SW_THERMAL,
    GpuHealth,
)

# XIDs that mean the GPU itself is broken (NVIDIA's XID catalog): double-bit ECC (48),
# internal micro-controller halt (62), row-remap failure (64), NVLink (74), fallen off
# the bus (79), high single-bit ECC rate (92), contained / uncontained ECC (94, 95), GSP
# (119, 120), unrecovered ECC (140). Others (13, 31, 43, 45 ...) are caused by the
# customer's own program and say nothing about the GPU.
FATAL_XIDS = frozenset({48, 62, 64, 74, 79, 92, 94, 95, 119, 120, 140})


@dataclass(frozen=True)
class Finding:
    code: str  # "xid-79", "ecc-uncorrectable", "thermal-slowdown", ...
    message: str

    @property
    def family(self) -> str:
        """The policy's name for it: every fatal XID is "xid"."""
        return "xid" if self.code.startswith("xid-") else self.code


def findings(reading: GpuHealth, *, ecc_aggregate_baseline: int = 0, temperature_margin_c: int = 0) -> list[Finding]:
    """Every fault in one reading; empty when the GPU is healthy.

    `ecc_aggregate_baseline`: the lifetime uncorrectable count an operator accepted when
    returning the GPU to service; only a rise above it is a fault."""
    found: list[Finding] = []
    if not reading.answering:
        found.append(Finding("not-answering", f"the GPU does not answer: {reading.error or 'no reading'}"))
    for xid in sorted(set(reading.xids) & FATAL_XIDS):
        found.append(Finding(f"xid-{xid}", f"the driver reported the critical XID {xid}"))
    volatile = reading.ecc_uncorrectable_volatile or 0
    aggregate = reading.ecc_uncorrectable_aggregate or 0
    if volatile > 0 or aggregate > ecc_aggregate_baseline:
        found.append(
            Finding("ecc-uncorrectable", f"uncorrectable ECC errors: {volatile} since boot, {aggregate} in its life")
        )
    if reading.row_remap_failure:
        found.append(Finding("row-remap-failure", "a memory row could not be remapped"))
    if reading.row_remap_pending:
        found.append(Finding("row-remap-pending", "a memory row remap waits for a GPU reset"))
    if reading.retired_pages_pending:
        found.append(Finding("retired-pages-pending", "a memory page retirement waits for a GPU reset"))
    reasons = reading.clock_event_reasons
    if reasons & (REASON_SW_THERMAL | REASON_HW_THERMAL):
        found.append(Finding("thermal-slowdown", "clocks are slowed down to cool the GPU"))
    if reasons & REASON_HW_POWER_BRAKE:
        found.append(Finding("power-slowdown", "clocks are slowed down by the power brake"))
    if reasons & REASON_HW_SLOWDOWN:
        found.append(Finding("hw-slowdown", "clocks are slowed down by the hardware (HW slowdown)"))
    hot, limit = reading.temperature_c, reading.slowdown_temperature_c
    if hot is not None and limit and hot >= limit - temperature_margin_c:
        found.append(Finding("temperature-high", f"{hot} °C, at or over its slowdown threshold of {limit} °C"))
    return found


_FIELDS = {f.name for f in fields(GpuHealth)} - {"uuid", "simulated"}


def faults_load(path: Path | str) -> dict[str, Any]:
    """The injected faults file; {} when there is none (a healthy simulated fleet)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}


def faults_save(path: Path | str, faults: dict[str, Any]) -> None:
    """Write the faults file whole, atomically (the worker may be reading it)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(faults, indent=2, sort_keys=True))
    tmp.replace(target)


def simulated_reading(*, uuid: str, fault: dict[str, Any] | None) -> GpuHealth:
    """A simulated GPU's reading: healthy, unless the faults file says otherwise."""
    given = {k: v for k, v in (fault or {}).items() if k in _FIELDS}
    if "xids" in given:
        given["xids"] = tuple(int(x) for x in given["xids"])
    return GpuHealth(uuid=uuid, simulated=True, **given)
