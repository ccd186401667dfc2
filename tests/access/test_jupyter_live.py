"""The real JupyterLab of the test image (PyPI's, installed by scripts/build-test-image),
used as a customer would: through the URLs and the token the API returns. A file put in
/workspace over the contents API is read back by a real kernel over its websocket, and
a real shell runs `id` in a JupyterLab terminal over its websocket."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import websocket

from instances.models import GpuType
from tests.access.customer import launch_running, wait_answering
from tests.containers import labelled_containers_remove
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.docker, pytest.mark.celery]


@pytest.fixture(autouse=True)
def _no_containers_left() -> Iterator[None]:
    yield
    labelled_containers_remove()


@pytest.fixture
def jupyter(celery_worker, this_host, alice) -> tuple[str, str]:
    """A running instance launched through the API: the base URL and token of its JupyterLab."""
    GpuType.objects.update(cpu_limit=1, ram_limit_mb=1024)
    TemplateFactory(
        slug="test-jupyter",
        ports=[{"name": "ssh", "port": 22, "protocol": "tcp"}, {"name": "jupyter", "port": 8888, "protocol": "http"}],
        access_methods=["ssh", "jupyter"],
    )
    body = launch_running(alice, template="test-jupyter", access=["ssh", "jupyter"])
    url = urlsplit(body["access"]["jupyter"])
    token = parse_qs(url.query)["token"][0]
    assert token == body["access"]["token"]
    base = f"{url.scheme}://{url.netloc}"
    # The port accepts before JupyterLab's handlers answer: wait for its API.
    assert wait_answering(f"{base}/api/status", params={"token": token}).ok
    return base, token


def test_jupyterlab_refuses_without_the_token_and_serves_with_it(jupyter):
    base, token = jupyter
    assert requests.get(f"{base}/api/kernels", timeout=10).status_code == HTTPStatus.FORBIDDEN
    wrong = requests.get(f"{base}/api/kernels", params={"token": "x" * len(token)}, timeout=10)
    assert wrong.status_code == HTTPStatus.FORBIDDEN
    # The page without the token sends to the login form, never to the lab.
    page = requests.get(f"{base}/lab", timeout=10, allow_redirects=False)
    assert page.status_code == HTTPStatus.FOUND
    assert "/login" in page.headers["Location"]
    headers = {"Authorization": f"token {token}"}
    assert requests.get(f"{base}/api/kernels", headers=headers, timeout=10).status_code == HTTPStatus.OK
    # The URL the API gives the owner opens the lab itself.
    assert requests.get(f"{base}/?token={token}", timeout=20).url.startswith(f"{base}/lab")
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"ws{base[4:]}/api/kernels/any/channels", timeout=10)


def _kernel_run(*, base: str, token: str, code: str) -> str:
    headers = {"Authorization": f"token {token}"}
    kernel = requests.post(f"{base}/api/kernels", json={"name": "python3"}, headers=headers, timeout=60)
    assert kernel.status_code == HTTPStatus.CREATED, kernel.text
    ws = websocket.create_connection(
        f"ws{base[4:]}/api/kernels/{kernel.json()['id']}/channels", header=headers, timeout=60
    )
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {"msg_id": msg_id, "username": "alice", "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False},
            }
        )
    )  # fmt: skip
    try:
        while True:
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "execute_result":
                return message["content"]["data"]["text/plain"]
            if message["msg_type"] == "error":
                raise AssertionError(message["content"])
    finally:
        ws.close()


def test_a_kernel_reads_the_workspace_over_its_websocket(jupyter):
    base, token = jupyter
    headers = {"Authorization": f"token {token}"}
    put = requests.put(
        f"{base}/api/contents/hello",
        json={"type": "file", "format": "text", "content": "hello from alice"},
        headers=headers,
        timeout=20,
    )
    assert put.status_code in (HTTPStatus.CREATED, HTTPStatus.OK), put.text
    assert _kernel_run(base=base, token=token, code="open('/workspace/hello').read()") == "'hello from alice'"


def test_a_terminal_runs_a_real_shell_over_its_websocket(jupyter):
    base, token = jupyter
    headers = {"Authorization": f"token {token}"}
    terminal = requests.post(f"{base}/api/terminals", headers=headers, timeout=30)
    assert terminal.status_code == HTTPStatus.OK, terminal.text
    ws = websocket.create_connection(
        f"ws{base[4:]}/terminals/websocket/{terminal.json()['name']}", header=headers, timeout=30
    )
    try:
        ws.send(json.dumps(["stdin", "id; pwd\r"]))
        output, deadline = "", time.monotonic() + 30
        while "uid=0(root)" not in output or "/workspace" not in output:
            assert time.monotonic() < deadline, output
            kind, *data = json.loads(ws.recv())
            if kind == "stdout":
                output += data[0]
    finally:
        ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"ws{base[4:]}/terminals/websocket/{terminal.json()['name']}", timeout=10)
