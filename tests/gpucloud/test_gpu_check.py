"""The GPU check scripts (docs/gpu.md) keep working where there is no GPU to run them on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_app_gpu_check_runs_its_whole_path_on_the_simulated_inventory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    done = subprocess.run(
        [sys.executable, "scripts/gpu-check-app", "--source", "simulated"],
        cwd=ROOT, env={**env, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check-app.json").read_text())
    assert report["ok"] is True
    assert report["checks"]["simulated_asks_no_device"] is True
    assert report["launch"]["instance"].startswith("inst_")


def test_the_nvml_check_says_plainly_that_there_is_no_gpu_here():
    done = subprocess.run([sys.executable, "scripts/gpu-check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"] == "gpus:nvml-unavailable"
