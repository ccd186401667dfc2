"""The meter on SQLite, the quick start's database: the metering suites run again in a
pytest of their own with DATABASE_URL unset (one implementation, two databases)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_metering_suites_pass_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env.update({"GPUCLOUD_VAR_DIR": str(tmp_path), "GPUCLOUD_DATA_ROOT": str(tmp_path / "data")})
    run = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            # The schema from the models (what `makemigrations --check` holds the migrations
            # to): dj-stripe's migrations alone take a minute and a half on SQLite.
            "--nomigrations",
            "tests/billing/test_metering.py", "tests/billing/test_metering_property.py",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
