"""requirements.lock (what scripts/run installs) agrees with requirements.txt (what the
Dockerfile, the tests and the CI install): every direct requirement, at the same version."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)")


def _pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if match := PIN.match(line.strip()):
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_the_lock_pins_every_requirement_at_its_version():
    wanted = _pins(ROOT / "requirements.txt")
    locked = _pins(ROOT / "requirements.lock")
    assert len(wanted) > 15
    assert {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version} == {}
