"""PostgreSQL is restarted under a running web server and worker.

Both run against a cluster of the test's own (port 5490), so the machine's shared
PostgreSQL is never restarted. Nobody restarts gunicorn or the worker: their
persistent connections (CONN_MAX_AGE=60) are health-checked before reuse
(conn_health_checks=True), so the first request and the first task after the restart
reconnect instead of failing on a dead socket.
"""

from __future__ import annotations

import subprocess
import sys
from http import HTTPStatus

import pytest
import requests

from tests.processes import ROOT, wait_until
from tests.reliability.helpers import REL_HOST, base_env

pytestmark = [pytest.mark.docker, pytest.mark.celery]

SETUP = """
from decimal import Decimal
from instances.host.inventory import host_sync
from instances.access.tokens import token_create
from tests.factories import GpuTypeFactory, TemplateFactory, UserFactory
GpuTypeFactory(sku="rtx-5090", display_name="RTX 5090", rate_per_hour=Decimal("1.49"))
GpuTypeFactory(sku="rtx-pro-6000", display_name="RTX PRO 6000", rate_per_hour=Decimal("2.99"))
host_sync(name="{host}", source="simulated")
TemplateFactory()
print(token_create(user=UserFactory(username="carol"), name="faults")[1])
"""


def _status(web, key: str, public_id: str) -> str:
    answer = requests.get(
        f"{web.url}/api/gpu/instances/{public_id}", headers={"Authorization": f"Token {key}"}, timeout=30
    )
    assert answer.status_code == HTTPStatus.OK, answer.text
    return answer.json()["status"]


def test_web_and_worker_carry_on_after_postgresql_restarts(private_postgres, start_gunicorn, start_worker):
    env = {"DATABASE_URL": private_postgres.url}
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SETUP.format(host=REL_HOST)],
        cwd=ROOT,
        env=base_env(**env),
        capture_output=True,
        text=True,
        check=True,
    )
    key = done.stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Token {key}"}
    web = start_gunicorn(**env)
    start_worker(**env)

    launched = requests.post(
        f"{web.url}/api/gpu/instances",
        json={"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]},
        headers=auth,
        timeout=30,
    )
    assert launched.status_code == HTTPStatus.ACCEPTED, launched.text
    public_id = launched.json()["id"]
    wait_until(lambda: _status(web, key, public_id) == "running", timeout=90, what="running")

    private_postgres.ctl("restart")  # -m fast: every open connection is cut

    # The very first request after the restart is answered: no 500, no restart of gunicorn.
    assert _status(web, key, public_id) == "running"
    stopped = requests.post(f"{web.url}/api/gpu/instances/{public_id}/stop", headers=auth, timeout=30)
    assert stopped.status_code == HTTPStatus.ACCEPTED, stopped.text
    # The worker, whose connection was cut too, takes the stop and finishes it.
    wait_until(lambda: _status(web, key, public_id) == "stopped", timeout=90, what="stopped")

    private_postgres.ctl("restart")
    started = requests.post(f"{web.url}/api/gpu/instances/{public_id}/start", headers=auth, timeout=30)
    assert started.status_code == HTTPStatus.ACCEPTED, started.text
    wait_until(lambda: _status(web, key, public_id) == "running", timeout=90, what="running again")
