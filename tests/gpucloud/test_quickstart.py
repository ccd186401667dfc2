"""The README's run command really starts web, worker and beat on embedded defaults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from http import HTTPStatus
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def _group_commands(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pgid=,args="], capture_output=True, text=True, check=True).stdout
    return [line.split(None, 1)[1] for line in out.splitlines() if line.split(None, 1)[0] == str(pgid)]


def _get(
    opener: urllib.request.OpenerDirector, url: str | urllib.request.Request, data: bytes | None = None
) -> tuple[int, str]:
    try:
        with opener.open(url, data=data, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_run_command_serves_the_admin_with_a_worker_and_beat(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update({"GPUCLOUD_VAR_DIR": str(tmp_path), "GPUCLOUD_WEB_PORT": str(port), "GPUCLOUD_HOST_NAME": "quickstart"})
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["scripts/run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    try:
        deadline = time.monotonic() + 240
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _ = _get(opener, f"{base}/admin/login/")
                if status == HTTPStatus.OK:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert status == HTTPStatus.OK, log_path.read_text()[-4000:]

        # Worker and beat are alive beside the web server.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            commands = _group_commands(proc.pid)
            worker = [c for c in commands if "celery" in c and " worker " in c and "host.quickstart,default" in c]
            beat = [c for c in commands if "celery" in c and " beat " in c]
            if worker and beat and "worker@quickstart ready" in log_path.read_text():
                break
            time.sleep(1)
        assert worker, (commands, log_path.read_text()[-3000:])
        assert beat, (commands, log_path.read_text()[-3000:])
        assert any("gunicorn" in c for c in commands), commands

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
            [str(ROOT / ".venv/bin/python"), "manage.py", "create_api_token", "quickstart-api"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
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
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    # Stopping the command stops everything it started.
    deadline = time.monotonic() + 30
    while _group_commands(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftover = _group_commands(proc.pid)
    if leftover:
        os.killpg(proc.pid, signal.SIGKILL)
    assert leftover == []
