"""The README's run command, from a fresh checkout: every stage says what it does, the admin
answers, web, worker and beat run under honcho, and one SIGINT to the command stops them all
even when it was started with SIGINT ignored (as `scripts/run &` from a script is)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from http import HTTPStatus
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("the demo image gpucloud-test", "Python environment", "database:", "the demo image\n", "web, worker and beat")


def _descendants(pid: int) -> list[str]:
    """Command lines of every process below `pid` (honcho starts each in its own session)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        child, parent, args = line.split(None, 2)
        children.setdefault(int(parent), []).append((int(child), args))
    found, todo = [], [pid]
    while todo:
        for child, args in children.get(todo.pop(), []):
            found.append(args)
            todo.append(child)
    return found


def _get(
    opener: urllib.request.OpenerDirector, url: str | urllib.request.Request, data: bytes | None = None
) -> tuple[int, str]:
    try:
        with opener.open(url, data=data, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _fresh_checkout(dest: Path) -> Path:
    """What a fresh clone of this working tree holds: the tracked and not-ignored files,
    no .venv, no var/ (uncommitted work included, so the test runs what is being changed)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_the_run_command_serves_the_admin_with_a_worker_and_beat(tmp_path, capsys):
    clone = _fresh_checkout(tmp_path / "clone")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.pop("GPUCLOUD_VAR_DIR", None)
    env.update({"GPUCLOUD_WEB_PORT": str(port), "GPUCLOUD_HOST_NAME": "quickstart"})
    log_path = tmp_path / "run.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["scripts/run"],
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # As a non-interactive shell starts `scripts/run &`: SIGINT ignored from the start.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    try:

        def admin_answers() -> bool:
            try:
                return _get(opener, f"{base}/admin/login/")[0] == HTTPStatus.OK
            except OSError:
                return proc.poll() is not None  # ended: the assertion below shows why

        wait_until(admin_answers, timeout=600, what="the admin of a fresh checkout", every=1)
        assert proc.poll() is None, log_path.read_text()[-4000:]
        elapsed = time.monotonic() - started
        text = log_path.read_text()
        lines = [line for line in text.splitlines() if line.startswith("run: ")]
        with capsys.disabled():
            print(f"\nfresh checkout to the admin answering: {elapsed:.0f} s")
            print("\n".join(line for line in lines if "[" in line or "done in" in line))

        # Every stage said what it was doing, in order, and how long the one before took.
        positions = [text.find(f"] {stage}") for stage in STAGES]
        assert -1 not in positions, text[-4000:]
        assert positions == sorted(positions), text[-4000:]
        assert len(re.findall(r"^run: \.\.\. done in \d+ s$", text, re.M)) == len(STAGES) - 1, text[-4000:]
        assert re.search(r"^run: ready to start after \d+ s", text, re.M), text[-4000:]

        # Worker and beat are alive beside the web server, under honcho.
        def all_three() -> list[str] | None:
            commands = _descendants(proc.pid)
            worker = [c for c in commands if "celery" in c and " worker " in c and "host.quickstart,default" in c]
            beat = [c for c in commands if "celery" in c and " beat " in c]
            web = [c for c in commands if "gunicorn" in c]
            ready = "worker@quickstart ready" in log_path.read_text()
            return commands if worker and beat and web and ready else None

        wait_until(all_three, timeout=90, what="web, worker and beat", every=1)

        # The printed operator login works and the admin shows the seeded data.
        match = re.search(r"username (\S+)\s+password (\S+)", log_path.read_text())
        assert match, log_path.read_text()[-4000:]
        _, page = _get(opener, f"{base}/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urlencode({"username": match[1], "password": match[2], "csrfmiddlewaretoken": token, "next": "/admin/"})
        status, page = _get(opener, f"{base}/admin/login/", data=form.encode())
        assert status == HTTPStatus.OK
        assert "Log out" in page
        _, templates = _get(opener, f"{base}/admin/templates_app/template/")
        for name in ("PyTorch", "TensorFlow", "ComfyUI", "vLLM", "Stable Diffusion", "Base CUDA"):
            assert name in templates
        _, gpus = _get(opener, f"{base}/admin/instances/gpu/")
        for text in ("RTX 5090", "RTX PRO 6000", "simulated"):
            assert text in gpus
        _, types = _get(opener, f"{base}/admin/instances/gputype/")
        assert "1.49" in types
        assert "2.99" in types

        # The API's hand-written reads (token lookup, the instance list) work on SQLite.
        made = subprocess.run(
            [str(clone / ".venv/bin/python"), "manage.py", "create_api_token", "quickstart-api"],
            cwd=clone, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        auth = {"Authorization": f"Token {made.stdout.strip().splitlines()[-1]}", "Content-Type": "application/json"}
        launch = urllib.request.Request(  # noqa: S310 (http://127.0.0.1)
            f"{base}/api/gpu/instances",
            data=b'{"template": "base-cuda", "gpu": "rtx-5090", "storage": 10, "access": ["ssh"]}',
            headers=auth,
        )
        status, body = _get(opener, launch)
        assert status == HTTPStatus.ACCEPTED, body
        launched = json.loads(body)
        listing = urllib.request.Request(f"{base}/api/gpu/instances", headers=auth)  # noqa: S310 (http://127.0.0.1)
        status, body = _get(opener, listing)
        assert status == HTTPStatus.OK, body
        listed = json.loads(body)
        assert listed["count"] == 1
        assert listed["results"][0]["id"] == launched["id"]
        assert listed["results"][0]["created_at"] == launched["created_at"]
        assert listed["results"][0]["billing"] == {"rate": "1.49", "unit": "hour"}
    finally:
        # One SIGINT to the command's own PID, as `kill -INT` of a backgrounded run.
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            leftover = _descendants(proc.pid)
            subprocess.run(["pkill", "-KILL", "-f", str(clone)], check=False)
            pytest.fail(f"scripts/run ignored SIGINT; still running: {leftover}")
    # Stopping the command stopped everything it started.
    left = subprocess.run(["pgrep", "-af", str(clone)], capture_output=True, text=True, check=False).stdout
    if left.strip():
        subprocess.run(["pkill", "-KILL", "-f", str(clone)], check=False)
    assert left.strip() == ""
