"""What a worker can see of activity inside a container without an agent in it.

Sockets: /proc/<pid>/net/tcp and tcp6 of any process in the container list the sockets
of the container's network namespace, readable from the host. An ESTABLISHED socket
whose local port is one of the instance's services (sshd, Jupyter, a terminal,
code-server) is a customer connected. Jupyter: its kernels (with the instance's token)
say whether one is executing and when a kernel last did anything. No Django here.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_ESTABLISHED = "01"


@dataclass(frozen=True)
class JupyterStatus:
    busy_kernels: int
    last_activity: datetime | None


def established_connections(*, pid: int, ports: set[int], proc: Path = Path("/proc")) -> int:
    """How many ESTABLISHED TCP connections the namespace of `pid` has on `ports`
    (local side). 0 when the process is gone."""
    count = 0
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / str(pid) / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _ESTABLISHED:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port in ports:
                count += 1
    return count


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def jupyter_status(*, base_url: str, token: str, timeout_seconds: float = 3) -> JupyterStatus | None:
    """Jupyter Server's kernels (`/api/kernels`, with the token): how many are executing
    now, and the latest kernel activity. None when it does not answer as Jupyter does.

    Not `/api/status`'s `last_activity`: it counts API requests too, this one among
    them, so polling it would keep every instance active. A kernel's own
    `last_activity` moves only with the kernel's messages."""
    url = base_url.rstrip("/") + "/api/kernels"
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310 - our own container
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310
            kernels = json.loads(response.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if not isinstance(kernels, list):
        return None
    kernels = [k for k in kernels if isinstance(k, dict)]
    times = [t for t in (_parse_time(k.get("last_activity")) for k in kernels) if t is not None]
    return JupyterStatus(
        busy_kernels=sum(1 for k in kernels if k.get("execution_state") == "busy"),
        last_activity=max(times, default=None),
    )
