"""Access to launched instances, end to end: real Docker, the test image, a real Celery
worker, and the lifecycle's own services (instance_launch / instance_destroy).

The test image runs the shipped start scripts (templates_app/images/common/
gpucloud-common.sh, and here pytorch's own start.sh) with the real programs: JupyterLab
(its kernels and terminals: tests/access/test_jupyter_live.py), code-server and the web
terminal (their shells and logins: tests/access/test_services_live.py).
"""

from __future__ import annotations

import io
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import connection, transaction

from instances.access.addresses import access_for
from instances.errors import NoCapacity
from instances.host.inventory import host_sync
from instances.models import Host, Instance, PortBinding
from instances.services import instance_destroy, instance_launch, instance_start, instance_stop
from tests.containers import docker, wait_for_status
from tests.factories import TemplateFactory
from tests.processes import stop_group, worker_env, worker_start

pytestmark = [pytest.mark.docker, pytest.mark.celery]

SSHD_CAPS = ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "NET_BIND_SERVICE", "KILL"]
CF_HOST = f"{settings.GPUCLOUD_HOST_NAME}-cf"


@pytest.fixture(autouse=True)
def _no_containers_left() -> Iterator[None]:
    yield
    for host in (settings.GPUCLOUD_HOST_NAME, CF_HOST):
        ids = docker("ps", "-aq", "--filter", f"label=gpucloud.host={host}").split()
        if ids:
            docker("rm", "-f", *ids, check=False)


@pytest.fixture
def keypair() -> tuple[paramiko.PKey, str]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode())), public.decode() + " alice@laptop"


@pytest.fixture
def sshd_template(db):
    return TemplateFactory()  # the test image: sshd on 22, JupyterLab on 8888


@pytest.fixture
def full_template(db):
    """The test image running the shipped pytorch start script: every kind of access."""
    return TemplateFactory(
        slug="test-pytorch-script",
        name="PyTorch start script on the test image",
        command=["/opt/gpucloud/images/pytorch/start.sh"],
        ports=[
            {"name": "ssh", "port": 22, "protocol": "tcp"},
            {"name": "jupyter", "port": 8888, "protocol": "http"},
            {"name": "code-server", "port": 8080, "protocol": "http"},
            {"name": "terminal", "port": 7681, "protocol": "http"},
        ],
        access_methods=["ssh", "jupyter", "code-server", "terminal"],
        cap_add=SSHD_CAPS,
    )


def launch(user, template, *, gpu: str = "rtx-5090", **options) -> Instance:
    options.setdefault("access", list(template.access_methods))
    return instance_launch(user=user, template=template, gpu_type=gpu, storage_gb=10, **options)


def ssh_login(address: str, port: int, *, pkey=None, password=None) -> str:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - a fresh test container
    try:
        client.connect(
            address,
            port=port,
            username="root",
            pkey=pkey,
            password=password,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
        )
        _, stdout, _ = client.exec_command("echo logged-in as $(id -un) in $PWD; cat /root/.ssh/authorized_keys")
        return stdout.read().decode()
    finally:
        client.close()


def ssh_target(command: str) -> tuple[str, int]:
    match = re.fullmatch(r"ssh root@(\S+) -p (\d+)", command)
    assert match, command
    return match[1], int(match[2])


def http(url: str, *, headers: dict | None = None, data: bytes | None = None) -> tuple[int, dict, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {}, data=data)  # noqa: S310 - http on loopback
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def eventually(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def jupyter_ready(url: str) -> None:
    """The port accepts before JupyterLab's handlers answer: wait for its API."""
    status_url = url.replace("/?", "/api/status?")
    eventually(lambda: _answers(status_url), timeout=60)


def _answers(url: str) -> bool:
    try:
        return http(url)[0] == 200
    except OSError:
        return False


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


# -- SSH ------------------------------------------------------------------------------
def test_key_login_works_and_the_password_is_refused_when_password_login_is_off(
    celery_worker, this_host, alice, sshd_template, keypair, settings
):
    settings.GPUCLOUD_EXPOSURE = "direct"
    pkey, public = keypair
    keys_only = launch(alice, sshd_template, ssh_public_keys=[public], ssh_password_auth=False)
    with_password = launch(alice, sshd_template, gpu="rtx-pro-6000", ssh_password_auth=True)
    keys_only = wait_for_status(keys_only, Instance.Status.RUNNING, Instance.Status.FAILED)
    with_password = wait_for_status(with_password, Instance.Status.RUNNING, Instance.Status.FAILED)
    assert keys_only.status == with_password.status == Instance.Status.RUNNING, keys_only.last_error

    access = access_for(instance=keys_only, reveal_secrets=True)
    address, port = ssh_target(access["ssh"])
    out = ssh_login(address, port, pkey=pkey)
    assert "logged-in as root in /root" in out
    assert public in out  # the key landed in authorized_keys
    with pytest.raises(paramiko.AuthenticationException):
        ssh_login(address, port, password=access["password"])

    # The same password login works where it is on: the refusal above is the setting.
    other = access_for(instance=with_password, reveal_secrets=True)
    assert "logged-in as root" in ssh_login(*ssh_target(other["ssh"]), password=other["password"])
    # ... and alice's key opens only the instance she put it on.
    with pytest.raises(paramiko.AuthenticationException):
        ssh_login(*ssh_target(other["ssh"]), pkey=pkey)


# -- HTTP services and every URL -----------------------------------------------------
def test_every_access_url_is_reachable_from_loopback_in_direct_mode(
    celery_worker, this_host, alice, full_template, keypair, settings
):
    settings.GPUCLOUD_EXPOSURE = "direct"
    pkey, public = keypair
    instance = wait_for_status(
        launch(alice, full_template, ssh_public_keys=[public]), Instance.Status.RUNNING, Instance.Status.FAILED
    )
    assert instance.status == Instance.Status.RUNNING, instance.last_error

    access = access_for(instance=instance, reveal_secrets=True)

    assert set(access) == {"ssh", "jupyter", "code-server", "terminal", "password", "token"}
    assert "logged-in as root" in ssh_login(*ssh_target(access["ssh"]), pkey=pkey)
    assert "logged-in as root" in ssh_login(*ssh_target(access["ssh"]), password=access["password"])
    jupyter_ready(access["jupyter"])
    status, headers, _ = http(access["jupyter"])  # the owner's URL logs in and opens the lab
    assert (status, headers["Location"].split("?")[0]) == (302, "/lab")
    assert http(access["terminal"], headers=basic("root", access["token"]))[0] == 200
    status, headers, _ = http(access["code-server"])
    assert (status, headers["Location"].split("?")[0]) == (302, "./login")
    login = access["code-server"] + "login"
    status, headers, _ = http(login, data=f"password={access['token']}".encode())
    assert status == 302
    cookie = headers["Set-Cookie"].split(";")[0]
    status, headers, _ = http(access["code-server"], headers={"Cookie": cookie})  # in: to the workspace
    assert (status, headers["Location"]) == (302, "./?folder=/workspace")
    # Every URL is on the host's address and one of the instance's own bound ports.
    bound = {b.host_port for b in instance.ports.all()}
    urls = [access["jupyter"], access["terminal"], access["code-server"]]
    assert {int(re.search(r":(\d+)/", url)[1]) for url in urls} | {ssh_target(access["ssh"])[1]} == bound


def test_the_token_checked_services_refuse_without_the_token(celery_worker, this_host, alice, full_template, settings):
    settings.GPUCLOUD_EXPOSURE = "direct"
    instance = wait_for_status(launch(alice, full_template), Instance.Status.RUNNING, Instance.Status.FAILED)
    assert instance.status == Instance.Status.RUNNING, instance.last_error
    with_token = access_for(instance=instance, reveal_secrets=True)
    shown = access_for(instance=instance, reveal_secrets=False)  # what a non-owner view gets
    token = with_token["token"]

    jupyter_ready(with_token["jupyter"])
    api = shown["jupyter"] + "api/kernels"  # JupyterLab's API: 403 without its token
    assert http(with_token["jupyter"].replace("/?", "/api/kernels?"))[0] == 200
    assert http(api)[0] == 403
    assert http(api + "?token=" + "x" * len(token))[0] == 403
    assert http(api, headers={"Authorization": f"token {token}"})[0] == 200
    status, headers, _ = http(shown["jupyter"] + "lab")  # its pages: to the login form
    assert (status, headers["Location"].split("?")[0]) == (302, "/login")
    assert http(shown["terminal"])[0] == 401
    assert http(shown["terminal"], headers=basic("root", "wrong"))[0] == 401
    assert http(shown["terminal"], headers=basic("root", token))[0] == 200
    status, headers, body = http(shown["code-server"] + "login", data=b"password=wrong")
    assert (status, "Set-Cookie" in headers, "Incorrect password" in body) == (200, False, True)
    assert http(shown["code-server"] + "login", data=f"password={token}".encode())[0] == 302
    # No secret leaks into the container's output (the logs API shows it).
    logs = (
        docker("logs", instance.container_name)
        + subprocess.run(
            ["docker", "logs", instance.container_name], capture_output=True, text=True, check=False
        ).stderr
    )
    assert token not in logs
    assert with_token["password"] not in logs


# -- host ports -----------------------------------------------------------------------
def _published(instance: Instance) -> set[int]:
    out = docker("port", instance.container_name)
    return {int(port) for port in re.findall(r":(\d+)$", out, flags=re.MULTILINE)}


def test_two_instances_never_share_a_host_port(celery_worker, this_host, alice, bob, full_template):
    first = launch(alice, full_template)
    second = launch(bob, full_template, gpu="rtx-pro-6000")
    first = wait_for_status(first, Instance.Status.RUNNING, Instance.Status.FAILED)
    second = wait_for_status(second, Instance.Status.RUNNING, Instance.Status.FAILED)
    assert first.status == second.status == Instance.Status.RUNNING

    first_ports = {b.host_port for b in first.ports.all()}
    second_ports = {b.host_port for b in second.ports.all()}
    assert len(first_ports) == len(second_ports) == 4
    assert first_ports.isdisjoint(second_ports)
    # Docker published exactly the bound ports, inside the host's range.
    assert _published(first) == first_ports
    assert _published(second) == second_ports
    low, high = this_host.port_range_start, this_host.port_range_end
    assert all(low <= port <= high for port in first_ports | second_ports)


def test_a_destroyed_instances_ports_are_reused_only_after_release(celery_worker, this_host, alice, sshd_template):
    # Two ports in all: exactly what one instance (ssh + jupyter) needs.
    low = settings.GPUCLOUD_PORT_RANGE[1] - 1
    Host.objects.filter(pk=this_host.pk).update(port_range_start=low, port_range_end=low + 1)
    first = wait_for_status(launch(alice, sshd_template), Instance.Status.RUNNING, Instance.Status.FAILED)
    assert first.status == Instance.Status.RUNNING, first.last_error
    assert {b.host_port for b in first.ports.all()} == {low, low + 1}
    with pytest.raises(NoCapacity):  # a GPU is free, the ports are not
        launch(alice, sshd_template, gpu="rtx-pro-6000")

    # Hold the bindings' rows so the worker's release waits until we let it go.
    locked, release = threading.Event(), threading.Event()

    def hold_bindings() -> None:
        try:
            with transaction.atomic():
                list(PortBinding.objects.select_for_update().filter(instance_id=first.pk))
                locked.set()
                release.wait(60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_bindings)
    holder.start()
    try:
        assert locked.wait(10)
        instance_destroy(instance=first)
        first.refresh_from_db()
        assert first.status in (Instance.Status.TERMINATING, Instance.Status.TERMINATED)
        with pytest.raises(NoCapacity):  # destroying, not yet released
            launch(alice, sshd_template, gpu="rtx-pro-6000")
    finally:
        release.set()
        holder.join()
    wait_for_status(first, Instance.Status.TERMINATED)
    assert not PortBinding.objects.filter(instance=first).exists()

    second = wait_for_status(
        launch(alice, sshd_template, gpu="rtx-pro-6000"), Instance.Status.RUNNING, Instance.Status.FAILED
    )
    assert second.status == Instance.Status.RUNNING, second.last_error
    assert {b.host_port for b in second.ports.all()} == {low, low + 1}
    assert _published(second) == {low, low + 1}


# -- cloudflare mode ------------------------------------------------------------------
@pytest.fixture
def cloudflare_worker(celery_worker, cloudflare_settings, gpu_types) -> Iterator[Host]:
    """A second host and its own worker, both in cloudflare mode against the local API.

    The session's worker keeps its direct-mode environment; this one consumes only the
    second host's queue, so each host's tasks run with that host's settings.
    """
    from gpucloud.celery import app

    cf = cloudflare_settings
    host = host_sync(name=CF_HOST, source="simulated").host
    queue = host.queue
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)
    env = worker_env(settings.DATABASES["default"]["NAME"])
    env.update(
        GPUCLOUD_HOST_NAME=CF_HOST,
        GPUCLOUD_EXPOSURE="cloudflare",
        GPUCLOUD_PUBLIC_DOMAIN=cf.zone_name,
        GPUCLOUD_CLOUDFLARE_API_TOKEN=cf.token,
        GPUCLOUD_CLOUDFLARE_ACCOUNT_ID=cf.account_id,
        GPUCLOUD_CLOUDFLARE_ZONE_ID=cf.zone_id,
        GPUCLOUD_CLOUDFLARE_TUNNEL_ID=cf.tunnel_id,
        GPUCLOUD_CLOUDFLARE_API_BASE=cf.base_url,
    )
    proc = worker_start(
        queues=[queue],
        name="pytest-cf",
        env=env,
        log_path=Path(settings.VAR_DIR) / "test-worker-cloudflare.log",
        concurrency=2,
    )
    try:
        yield host
    finally:
        stop_group(proc)


def test_cloudflare_routes_of_exactly_that_instance_follow_launch_stop_start_and_destroy(
    cloudflare_worker, cloudflare_settings, alice, full_template
):
    cf = cloudflare_settings
    operator_rule = {"hostname": "grafana.gpus.example.com", "service": "http://127.0.0.1:3000"}
    cf.tunnel_config["ingress"].insert(0, operator_rule)

    instance = wait_for_status(launch(alice, full_template), Instance.Status.RUNNING, Instance.Status.FAILED)
    assert instance.status == Instance.Status.RUNNING, instance.last_error
    assert instance.host == cloudflare_worker

    label = instance.public_id.replace("_", "-")
    bindings = {b.name: b.host_port for b in instance.ports.all()}
    expected_rules = [
        {"hostname": f"{label}-ssh.gpus.example.com", "service": f"ssh://127.0.0.1:{bindings['ssh']}"},
        {"hostname": f"{label}-terminal.gpus.example.com", "service": f"http://127.0.0.1:{bindings['terminal']}"},
        {"hostname": f"{label}-jupyter.gpus.example.com", "service": f"http://127.0.0.1:{bindings['jupyter']}"},
        {"hostname": f"{label}-code-server.gpus.example.com", "service": f"http://127.0.0.1:{bindings['code-server']}"},
    ]
    key = lambda rule: rule["hostname"]  # noqa: E731
    # The worker publishes right after it marks the instance running.
    eventually(lambda: len(cf.records) == 4)
    assert cf.ingress[0] == operator_rule
    assert cf.ingress[-1] == {"service": "http_status:404"}
    assert sorted(cf.ingress[1:-1], key=key) == sorted(expected_rules, key=key)
    target = f"{cf.tunnel_id}.cfargotunnel.com"
    assert sorted((r["name"], r["type"], r["content"], r["proxied"]) for r in cf.records.values()) == sorted(
        (rule["hostname"], "CNAME", target, True) for rule in expected_rules
    )
    assert len(cf.calls_to("POST", "/dns_records")) == 4
    # The URLs the customer sees are those hostnames.
    access = access_for(instance=instance, reveal_secrets=False)
    assert access["ssh"] == (
        f'ssh -o ProxyCommand="cloudflared access ssh --hostname %h" root@{label}-ssh.gpus.example.com'
    )
    assert access["jupyter"] == f"https://{label}-jupyter.gpus.example.com/"
    # The rules point at the ports Docker really published.
    assert _published(instance) == set(bindings.values())

    # Stop withdraws every route; start publishes the new ports' routes again.
    instance_stop(instance=instance)
    wait_for_status(instance, Instance.Status.STOPPED)
    eventually(lambda: not cf.records)
    assert cf.ingress == [operator_rule, {"service": "http_status:404"}]
    instance_start(instance=instance)
    instance = wait_for_status(instance, Instance.Status.RUNNING, Instance.Status.FAILED)
    assert instance.status == Instance.Status.RUNNING, instance.last_error
    restarted = {b.host_port for b in instance.ports.all()}
    eventually(lambda: len(cf.records) == 4)
    assert {int(rule["service"].rsplit(":", 1)[1]) for rule in cf.ingress[1:-1]} == restarted
    assert all(rule["hostname"].startswith(label + "-") for rule in cf.ingress[1:-1])

    instance_destroy(instance=instance)
    wait_for_status(instance, Instance.Status.TERMINATED)
    eventually(lambda: not cf.records)

    assert cf.ingress == [operator_rule, {"service": "http_status:404"}]
    assert cf.records == {}
    deleted = {c.path.rsplit("/", 1)[1] for c in cf.calls_to("DELETE", "/dns_records/")}
    created = {c.body["name"] for c in cf.calls_to("POST", "/dns_records")}
    assert len(deleted) == 8  # after the stop, and after the destroy
    assert created == {rule["hostname"] for rule in expected_rules}
