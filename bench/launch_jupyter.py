"""Launch to JupyterLab answering: the control plane against Docker alone (issue 13).

(a) cached image: `instance_launch` → JupyterLab's API answers with the instance's token
(through Redis, a real Celery worker, Docker, the real JupyterLab of the test image),
beside `docker network create` + `docker run -d` of the same image with the same flags
→ the same URL answers. p50 and p95 over N launches each, alternating; goal: ratio ≤ 1.10
at the median.
(b) missing image: the same launch when the image must first be pulled from a local
registry (Debian's docker-registry on loopback, tests/registry.py), beside
`docker pull` + `docker run`. The image is removed before every run of either kind.

    .venv/bin/python bench/launch_jupyter.py [-n 10] [-p 3]

Setup as bench/launch.py (PostgreSQL, Redis, a bench-<machine> host); the image is
GPUCLOUD_TEST_IMAGE (default gpucloud-test/sshd:latest, built by scripts/build-test-image).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from bench.launch import HOST, cleanup, docker, start_worker, wait_row
from instances.access.crypto import decrypt
from instances.host.inventory import host_sync
from instances.models import Instance
from instances.services import instance_destroy, instance_launch
from instances.services.provision import container_spec
from templates_app.models import Template
from tests.registry import image_push_fresh, image_remove, registry_start

IMAGE = os.environ.get("GPUCLOUD_TEST_IMAGE", "gpucloud-test/sshd:latest")
CAPS = ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "NET_BIND_SERVICE", "KILL"]
PORTS = [{"name": "ssh", "port": 22, "protocol": "tcp"}, {"name": "jupyter", "port": 8888, "protocol": "http"}]


def wait_jupyter(port: int, token: str, timeout: float = 300) -> None:
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"JupyterLab on {port} never answered")
        time.sleep(0.02)


def control_plane(user, template: Template, *, keep=None) -> float:
    started = time.perf_counter()
    instance = instance_launch(user=user, template=template, gpu_type="rtx-5090", storage_gb=10, access=["jupyter"])
    port = instance.ports.get(name="jupyter").host_port
    wait_jupyter(port, decrypt(instance.access_token_encrypted))
    elapsed = time.perf_counter() - started
    instance.refresh_from_db()
    if keep is not None:
        keep(instance)
    instance_destroy(instance=instance)
    wait_row(instance, "terminated")
    return elapsed


def raw_flags(instance: Instance, image: str) -> tuple[list[str], str]:
    """The control plane's own container spec as `docker run` flags, and its token."""
    workspace = Path(settings.GPUCLOUD_DATA_ROOT) / "bench-raw"
    workspace.mkdir(parents=True, exist_ok=True)
    spec = container_spec(instance=instance, workspace=str(workspace))
    flags = ["--label", f"gpucloud.host={HOST}", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
             "--pids-limit", str(spec.pids_limit), "--memory", f"{spec.memory_mb}m", "--memory-swap",
             f"{spec.memory_mb}m", "--cpus", str(min(spec.cpu_limit, os.cpu_count() or 1)), "--ipc", "private",
             "--shm-size", f"{spec.shm_size_mb}m", "--mount", f"type=bind,source={workspace},target=/workspace",
             "-p", "127.0.0.1::8888", "--log-opt", "max-size=10m", "--log-opt", "max-file=3"]  # fmt: skip
    for cap in spec.cap_add:
        flags += ["--cap-add", cap]
    for key, value in spec.env.items():
        flags += ["-e", f"{key}={value}"]
    return [*flags, image], spec.env["GPUCLOUD_JUPYTER_TOKEN"]


def raw_docker(flags: list[str], token: str, n: int, *, pull: str = "") -> float:
    name = f"gpucloud-bench-raw-{n}"
    started = time.perf_counter()
    if pull:
        docker("pull", "-q", pull)
    docker("network", "create", "--label", f"gpucloud.host={HOST}", name)
    container = docker("run", "-d", "--name", name, "--network", name, *flags)
    port = int(docker("port", container, "8888/tcp").splitlines()[0].rsplit(":", 1)[1])
    wait_jupyter(port, token)
    elapsed = time.perf_counter() - started
    docker("rm", "-f", container)
    docker("network", "rm", name)
    return elapsed


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def report(label: str, plane: list[float], raw: list[float], goal: str) -> None:
    a, b = statistics.median(plane), statistics.median(raw)
    print(f"{label}: control plane p50 {a:.2f} s p95 {p95(plane):.2f} s | docker p50 {b:.2f} s p95 {p95(raw):.2f} s"
          f" | ratio at the median {a / b:.2f}{goal}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="launches of a cached image of each kind (default 10)")
    parser.add_argument("-p", type=int, default=3, help="launches that pull, of each kind (default 3; 0: none)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    host_sync(name=HOST, source="simulated")
    user, _ = get_user_model().objects.get_or_create(username="bench")
    defaults = {"name": "Bench Jupyter", "image": IMAGE, "ports": PORTS, "access_methods": ["jupyter"],
                "cap_add": CAPS, "ready_timeout_seconds": 300}  # fmt: skip
    template, _ = Template.objects.update_or_create(slug="bench-jupyter", defaults=defaults)
    Instance.objects.filter(host__name=HOST).exclude(status__in=["terminated", "failed"]).update(status="failed")
    cleanup()
    worker = start_worker()
    registry = registry_start() if args.p else None
    got: list[tuple[list[str], str]] = []
    plane, raw, plane_pull, raw_pull = [], [], [], []
    try:
        control_plane(user, template, keep=lambda instance: got.append(raw_flags(instance, IMAGE)))
        flags, token = got[0]
        raw_docker(flags, token, -1)
        for n in range(args.n):
            plane.append(control_plane(user, template))
            raw.append(raw_docker(flags, token, n))
            print(f"cached {n + 1}/{args.n}: control plane {plane[-1]:.2f} s, docker {raw[-1]:.2f} s", flush=True)
        if registry is not None:
            pulled = image_push_fresh(registry=registry, name="bench")
            Template.objects.filter(pk=template.pk).update(image=pulled)
            pull_flags = [*flags[:-1], pulled]
            for n in range(args.p):
                image_remove(pulled)
                plane_pull.append(control_plane(user, Template.objects.get(pk=template.pk)))
                image_remove(pulled)
                raw_pull.append(raw_docker(pull_flags, token, 100 + n, pull=pulled))
                print(f"pull {n + 1}/{args.p}: control plane {plane_pull[-1]:.2f} s, docker {raw_pull[-1]:.2f} s")
            image_remove(pulled)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        cleanup()
        if registry is not None:
            registry.stop()
    report(f"launch → JupyterLab answers, cached image (n={args.n})", plane, raw, " (goal ≤ 1.10)")
    if plane_pull:
        report(f"launch with a pull from a loopback registry (n={args.p})", plane_pull, raw_pull, "")


if __name__ == "__main__":
    main()
