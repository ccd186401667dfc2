"""The web terminal, code-server and the authenticating proxy of the test image: the real
programs the catalog installs (templates_app/images/common/install.sh: gpucloud-web with
terminado and xterm.js, code-server from npm on Node from PyPI), used as a customer
would, through the URLs and the token the API returns. Everything published refuses a
request without the credential.

ComfyUI itself (PyTorch, model files) is not in the CI image: the proxy that publishes
it in the catalog image (gpucloud_start_auth_proxy) is tested in front of a stand-in
HTTP app on loopback."""

from __future__ import annotations

import json
import time
from base64 import b64encode
from collections.abc import Iterator
from http import HTTPStatus

import pytest
import requests
import websocket

from instances.models import GpuType
from tests.access.customer import SSH, SSHD_CAPS, launch_running, launch_services, wait_answering
from tests.containers import labelled_containers_remove
from tests.factories import TemplateFactory

pytestmark = [pytest.mark.docker, pytest.mark.celery]

# A stand-in for ComfyUI: an HTTP app with no login, on loopback, behind the catalog's proxy.
STAND_IN_APP = """. /opt/gpucloud/gpucloud-common.sh
gpucloud_init
echo 'the app behind the proxy' > /workspace/app.txt
(cd /workspace && exec python3 -m http.server 8189 --bind 127.0.0.1 >/dev/null 2>&1) &
gpucloud_start_auth_proxy 8188 8189
gpucloud_exec_sshd
"""


@pytest.fixture(autouse=True)
def _no_containers_left() -> Iterator[None]:
    yield
    labelled_containers_remove()


@pytest.fixture
def services(celery_worker, this_host, alice) -> dict:
    return launch_services(alice)


def _basic(user: str, password: str) -> str:
    return "Authorization: Basic " + b64encode(f"{user}:{password}".encode()).decode()


def _ws(url: str) -> str:
    return "ws" + url.removeprefix("http")


def _shell_output(ws: websocket.WebSocket, command: str) -> str:
    """What `command` printed in the shell. The terminal echoes the typed line and the
    prompt: the output is what comes between two markers computed by the shell, which
    the echoed line does not contain."""
    ws.send(json.dumps(["stdin", f"echo begin-$((6*7)); {command}; echo end-$((6*7))\r"]))
    output, deadline = "", time.monotonic() + 30
    while "end-42" not in output:
        assert time.monotonic() < deadline, output
        kind, *data = json.loads(ws.recv())
        if kind == "stdout":
            output += data[0]
    return output.split("begin-42", 1)[1].split("end-42", 1)[0]


def test_the_web_terminal_runs_a_real_shell_behind_the_credential(services):
    url, token = services["terminal"], services["token"]
    assert token not in url  # the terminal asks for it; its URL carries no secret
    assert wait_answering(url).status_code == HTTPStatus.UNAUTHORIZED
    assert requests.get(url, auth=("root", "x" * len(token)), timeout=10).status_code == HTTPStatus.UNAUTHORIZED
    assert requests.get(url, auth=("admin", token), timeout=10).status_code == HTTPStatus.UNAUTHORIZED
    assert requests.get(url + "static/xterm.js", timeout=10).status_code == HTTPStatus.UNAUTHORIZED
    page = requests.get(url, auth=("root", token), timeout=10)
    assert page.status_code == HTTPStatus.OK
    assert "xterm.js" in page.text
    script = requests.get(url + "static/xterm.js", cookies=page.cookies, timeout=10)
    assert script.status_code == HTTPStatus.OK  # the session cookie the browser keeps
    assert "Terminal" in script.text

    for header in ([], [_basic("root", "wrong")]):
        with pytest.raises(websocket.WebSocketBadStatusException) as exc:
            websocket.create_connection(_ws(url) + "websocket", header=header, timeout=10)
        assert exc.value.status_code == HTTPStatus.UNAUTHORIZED

    ws = websocket.create_connection(_ws(url) + "websocket", header=[_basic("root", token)], timeout=30)
    try:
        output = _shell_output(ws, "id; pwd").split()
        assert output[:2] == ["uid=0(root)", "gid=0(root)"]
        assert output[-1] == "/workspace"
        # The shell inherits no secret: the token left the environment before it started.
        env = _shell_output(ws, "env")
        assert "HOME=/root" in env
        assert token not in env
        assert "GPUCLOUD_WEB_PASSWORD" not in env
    finally:
        ws.close()
    # A browser's session cookie opens the websocket too (not every browser sends basic auth there).
    cookie = "; ".join(f"{name}={value}" for name, value in page.cookies.items())
    ws = websocket.create_connection(_ws(url) + "websocket", cookie=cookie, timeout=30)
    try:
        assert _shell_output(ws, "id -un").split() == ["root"]
    finally:
        ws.close()


def test_code_server_refuses_a_wrong_password_and_accepts_the_generated_one(services):
    url, token = services["code-server"], services["token"]
    assert token not in url
    first = wait_answering(url, timeout=120)  # Node takes a while to start on a busy host
    assert first.status_code == HTTPStatus.FOUND
    assert first.headers["Location"].startswith("./login")
    assert requests.get(url + "login", timeout=10).status_code == HTTPStatus.OK

    wrong = requests.post(url + "login", data={"password": "x" * len(token)}, timeout=30, allow_redirects=False)
    assert "code-server-session" not in wrong.cookies
    assert wrong.status_code != HTTPStatus.FOUND
    assert "Incorrect password" in wrong.text
    assert requests.get(url, cookies=wrong.cookies, timeout=10, allow_redirects=False).status_code == HTTPStatus.FOUND

    right = requests.post(url + "login", data={"password": token}, timeout=30, allow_redirects=False)
    assert right.status_code == HTTPStatus.FOUND, right.text
    session = right.cookies["code-server-session"]
    editor = requests.get(url, cookies={"code-server-session": session}, timeout=30)  # to ./?folder=/workspace
    assert editor.status_code == HTTPStatus.OK
    assert editor.url.endswith("folder=/workspace")
    assert "workbench-web-configuration" in editor.text  # VS Code's own page, from the real code-server


def test_everything_the_instance_publishes_refuses_requests_without_the_credential(services):
    token = services["token"]
    for url in (services["terminal"], services["code-server"]):
        wait_answering(url, timeout=120)
    jupyter = services["jupyter"].split("?")[0]
    wait_answering(jupyter + "api/status")
    refused = {
        "jupyter api": requests.get(jupyter + "api/contents", timeout=10).status_code,
        "jupyter page": requests.get(jupyter + "lab", timeout=10, allow_redirects=False).status_code,
        "terminal": requests.get(services["terminal"], timeout=10).status_code,
        "code-server": requests.get(services["code-server"], timeout=10, allow_redirects=False).status_code,
        "code-server files": requests.get(
            services["code-server"] + "vscode-remote-resource?path=/etc/hostname", timeout=10, allow_redirects=False
        ).status_code,
    }
    assert refused == {
        "jupyter api": HTTPStatus.FORBIDDEN,
        "jupyter page": HTTPStatus.FOUND,  # to the login form
        "terminal": HTTPStatus.UNAUTHORIZED,
        "code-server": HTTPStatus.FOUND,  # to ./login
        "code-server files": HTTPStatus.UNAUTHORIZED,
    }
    assert requests.get(jupyter + "api/contents", params={"token": token}, timeout=10).ok


def test_an_app_without_a_login_is_published_only_behind_the_credential(celery_worker, this_host, alice):
    GpuType.objects.update(cpu_limit=1, ram_limit_mb=1024)
    TemplateFactory(
        slug="test-proxied-app",
        command=["/bin/sh", "-c", STAND_IN_APP],
        ports=[SSH, {"name": "app", "port": 8188, "protocol": "http"}],
        access_methods=["ssh", "http"],
        cap_add=SSHD_CAPS,
    )
    access = launch_running(alice, template="test-proxied-app", access=["ssh", "http"])["access"]
    token, url = access["token"], access["http"]["app"]
    assert wait_answering(url + "app.txt").status_code == HTTPStatus.UNAUTHORIZED
    assert requests.get(url + "app.txt", auth=("root", "wrong"), timeout=10).status_code == HTTPStatus.UNAUTHORIZED
    deadline = time.monotonic() + 30
    while (served := requests.get(url + "app.txt", auth=("root", token), timeout=10)).status_code != HTTPStatus.OK:
        assert served.status_code == HTTPStatus.BAD_GATEWAY, served.text  # the app is still starting
        assert time.monotonic() < deadline, served.text
        time.sleep(0.3)
    assert served.text == "the app behind the proxy\n"
    assert requests.get(url + "app.txt", cookies=served.cookies, timeout=10).text == served.text
