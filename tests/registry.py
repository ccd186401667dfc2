"""A real image registry on loopback (Debian's `docker-registry`, the CNCF distribution
registry) for the pull tests and the launch benchmark, and images built only to be
pushed there, so that a launch's pull downloads for real."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.factories import TEST_IMAGE_SLIM
from tests.processes import free_port, stop_group, wait_until


@dataclass
class Registry:
    address: str  # host:port, as image references name it
    folder: Path
    process: subprocess.Popen
    username: str = ""
    password: str = ""

    def stop(self) -> None:
        stop_group(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


def registry_start(*, auth: bool = False) -> Registry:
    """A registry on 127.0.0.1 with its storage in a fresh folder; with `auth`, one
    that demands a basic-auth login (htpasswd, bcrypt)."""
    if shutil.which("docker-registry") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "docker-registry", "apache2-utils"], check=True, timeout=300)
    folder = Path(tempfile.mkdtemp(prefix="gpucloud-registry-"))
    port = free_port()
    config = [
        "version: 0.1",
        "log: {level: warn}",
        f"storage: {{filesystem: {{rootdirectory: {folder / 'data'}}}, delete: {{enabled: true}}}}",
        f"http: {{addr: '127.0.0.1:{port}', secret: {secrets.token_hex(16)}}}",
    ]
    username = password = ""
    if auth:
        username, password = "puller", secrets.token_urlsafe(12)
        entry = subprocess.run(
            ["htpasswd", "-Bbn", username, password], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        (folder / "htpasswd").write_text(entry + "\n")
        config.append(f"auth: {{htpasswd: {{realm: gpucloud-test, path: {folder / 'htpasswd'}}}}}")
    (folder / "config.yml").write_text("\n".join(config) + "\n")
    log = (folder / "registry.log").open("w")
    process = subprocess.Popen(
        ["docker-registry", "serve", str(folder / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    registry = Registry(f"127.0.0.1:{port}", folder, process, username, password)

    def answers() -> bool:
        try:
            return requests.get(f"http://{registry.address}/v2/", timeout=2).status_code in (200, 401)
        except requests.RequestException:
            return False

    wait_until(answers, timeout=30, what=f"the registry on {registry.address}")
    return registry


def image_push_fresh(*, registry: Registry, name: str = "pulltest", layer_mb: int = 24) -> str:
    """Build an image only for this call (the slim test image plus a layer of random bytes),
    push it to `registry`, and remove it locally: a launch of it must really pull."""
    reference = f"{registry.address}/gpucloud-test/{name}:{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="gpucloud-push-") as context:
        Path(context, "blob").write_bytes(os.urandom(layer_mb * 1024 * 1024))
        Path(context, "Dockerfile").write_text(f"FROM {TEST_IMAGE_SLIM}\nCOPY blob /opt/blob\n")
        subprocess.run(
            ["docker", "build", "-q", "-t", reference, context], check=True, capture_output=True, timeout=300
        )
        # A client config of its own: a `docker login` here must not leave the engine's
        # callers (the worker) a stored login for this registry.
        env = {**os.environ, "DOCKER_CONFIG": tempfile.mkdtemp(prefix="gpucloud-docker-config-")}
        try:
            if registry.username:
                subprocess.run(
                    ["docker", "login", registry.address, "-u", registry.username, "--password-stdin"],
                    input=registry.password, text=True, env=env, check=True, capture_output=True, timeout=60,
                )  # fmt: skip
            subprocess.run(["docker", "push", reference], env=env, check=True, capture_output=True, timeout=300)
        finally:
            shutil.rmtree(env["DOCKER_CONFIG"], ignore_errors=True)
        subprocess.run(["docker", "image", "rm", reference], check=True, capture_output=True, timeout=120)
    return reference


def image_remove(reference: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", reference], check=False, capture_output=True, timeout=120)


def image_present(reference: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", reference], check=False, capture_output=True, timeout=60)
    return found.returncode == 0
