"""What a pull's progress messages add up to (no Docker here: the runtime yields them).

The engine reports per layer: `Pulling fs layer`, `Downloading` with
`progressDetail: {current, total}`, `Download complete`, `Extracting`, `Pull complete`,
or `Already exists` for a layer the host holds. The whole is the sum over the layers
whose size the engine has told: a layer's total becomes known when its download starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GB = 1000**3
MB = 1000**2
_WHOLE = ("Pulling from", "Digest", "Status")
_DONE = ("Download complete", "Pull complete", "Extracting", "Verifying Checksum")


def size_text(*, done: int, total: int) -> str:
    """`2.1 of 7.9 GB` (or `120 of 245 MB` below a gigabyte), as Docker counts bytes."""
    if total >= GB:
        return f"{done / GB:.1f} of {total / GB:.1f} GB"
    return f"{done / MB:.0f} of {total / MB:.0f} MB"


@dataclass
class PullProgress:
    """The running sum of one pull's layer messages."""

    totals: dict[str, int] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    layers: set[str] = field(default_factory=set)
    present: set[str] = field(default_factory=set)

    def add(self, message: dict[str, Any]) -> bool:
        """Take one message; True when it moved the byte count (worth reporting)."""
        layer, status = message.get("id") or "", message.get("status") or ""
        detail = message.get("progressDetail") or {}
        if not layer or status.startswith(_WHOLE):  # about the image, not a layer
            return False
        self.layers.add(layer)
        if status == "Already exists":
            self.present.add(layer)
            return False
        if status == "Downloading" and detail.get("total"):
            self.totals[layer] = int(detail["total"])
            self.current[layer] = int(detail.get("current") or 0)
            return True
        if status.startswith(_DONE) and layer in self.totals and self.current.get(layer) != self.totals[layer]:
            self.current[layer] = self.totals[layer]
            return True
        return False

    @property
    def done_bytes(self) -> int:
        return sum(self.current.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.totals.values())

    def text(self) -> str:
        return f"pulling {size_text(done=self.done_bytes, total=self.total_bytes)}"

    def data(self) -> dict[str, int]:
        return {
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "layers": len(self.layers),
            "layers_present": len(self.present),
        }
