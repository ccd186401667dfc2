"""What a customer does before using an instance's services: launch through the API with
a real token, wait until it runs, and read the URLs and credentials the API returns."""

from __future__ import annotations

import time
from http import HTTPStatus

import requests

from instances.models import GpuType
from tests.api.helpers import token_client
from tests.factories import TemplateFactory

SSH = {"name": "ssh", "port": 22, "protocol": "tcp"}
SSHD_CAPS = ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "NET_BIND_SERVICE", "KILL"]


def launch_running(user, *, template: str, access: list[str], timeout: float = 120) -> dict:
    """The running instance's API body (its `access` holds the URLs and the token)."""
    api = token_client(user)
    launch = {"template": template, "gpu": "rtx-5090", "storage": 10, "access": access}
    response = api.post("/api/gpu/instances?wait=20", launch, format="json")
    assert response.status_code == HTTPStatus.ACCEPTED, response.content
    path, deadline = response["Location"], time.monotonic() + timeout
    while (body := api.get(path).json())["status"] not in ("running", "failed"):
        assert time.monotonic() < deadline, body
        time.sleep(0.3)
    assert body["status"] == "running", body
    return body


def wait_answering(url: str, *, timeout: float = 90, **kwargs) -> requests.Response:
    """A published port accepts before the program behind it answers: wait for an answer
    below 500 (a refusal counts: it is the program answering)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(url, timeout=10, allow_redirects=False, **kwargs)
            if response.status_code < HTTPStatus.INTERNAL_SERVER_ERROR:
                return response
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.3)


def launch_services(user) -> dict:
    """An instance of the test image running the shipped pytorch start script (JupyterLab,
    code-server, the web terminal), launched through the API: its `access` object."""
    GpuType.objects.update(cpu_limit=1, ram_limit_mb=2048)
    TemplateFactory(
        slug="test-services",
        command=["/opt/gpucloud/images/pytorch/start.sh"],
        ports=[
            SSH,
            {"name": "jupyter", "port": 8888, "protocol": "http"},
            {"name": "code-server", "port": 8080, "protocol": "http"},
            {"name": "terminal", "port": 7681, "protocol": "http"},
        ],
        access_methods=["ssh", "jupyter", "code-server", "terminal"],
        cap_add=SSHD_CAPS,
    )
    body = launch_running(user, template="test-services", access=["ssh", "jupyter", "code-server", "terminal"])
    return body["access"]
