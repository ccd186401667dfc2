"""The README documents every environment variable the settings read."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_environment_variable_of_the_settings_is_in_the_readme():
    settings = "\n".join(p.read_text() for p in sorted((ROOT / "gpucloud" / "settings").glob("*.py")))
    names = set(re.findall(r'\benv(?:_int|_bool|_list)?\(\s*"([A-Z][A-Z0-9_]+)"', settings))
    # Provider keys are read as f"{provider}_CLIENT_ID" / "_CLIENT_SECRET".
    names |= {f"{p}_{k}" for p in ("GITHUB", "GOOGLE") for k in ("CLIENT_ID", "CLIENT_SECRET")}
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"[A-Z][A-Z0-9_]{2,}", readme))
    missing = sorted(names - documented)
    assert len(names) > 30
    assert missing == []
