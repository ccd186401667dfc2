"""The CLI as its users run it: the installed `gpucloud` script in a subprocess, with its
own HOME, against the live test server (pytest-django's live_server)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from instances.access.tokens import token_create

GPUCLOUD = Path(sys.executable).parent / "gpucloud"


@pytest.fixture
def run_cli(tmp_path, live_server) -> Callable[..., subprocess.CompletedProcess]:
    """Run `gpucloud ARGS` with HOME in tmp_path and the server's URL in GPUCLOUD_URL."""
    assert GPUCLOUD.exists(), "install the CLI: .venv/bin/pip install ./cli (requirements-dev.txt does)"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLOUD_")}
        base |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "GPUCLOUD_URL": live_server.url}
        return subprocess.run(
            [str(GPUCLOUD), *args],
            env=base | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    run.home = home  # type: ignore[attr-defined]
    return run


@pytest.fixture
def alice_token(alice) -> str:
    _, key = token_create(user=alice, name="cli")
    return key
