"""Launch latency: the control plane against Docker alone.

Alternates, N times each, (a) `instance_launch` → the row is `running` (through Redis,
a real Celery worker, Docker, and the wait until every port answers) and (b) a raw
`docker network create` + `docker run -d` of the same image with the same flags,
then waiting for the same port the same way. Prints both medians and their ratio.
Goal: ratio ≤ 1.25 (the control plane adds at most a quarter to what Docker needs).

    .venv/bin/python bench/launch.py [-n 10]

Uses PostgreSQL and Redis like the tests (DATABASE_URL / REDIS_URL, defaults below),
a host named bench-<machine> with simulated GPUs, and the test image
(scripts/build-test-image). Everything it makes carries gpucloud.host=bench-… and is
removed at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gpucloud_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("GPUCLOUD_HOST_NAME", "bench-" + socket.gethostname().split(".")[0].lower())
os.environ.setdefault("GPUCLOUD_PORT_RANGE_START", "23000")
os.environ.setdefault("GPUCLOUD_PORT_RANGE_END", "23999")
os.environ.setdefault("GPUCLOUD_VAR_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpucloud.settings")
# The bench measures the lifecycle, not the balance check: its user has no ledger.
os.environ.setdefault("GPUCLOUD_ADMISSION_CHECKS", "")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from instances.host.inventory import host_sync  # noqa: E402
from instances.models import Instance  # noqa: E402
from instances.services import instance_destroy, instance_launch  # noqa: E402
from instances.services.provision import container_spec  # noqa: E402
from templates_app.models import Template  # noqa: E402

IMAGE = "gpucloud-test/sshd:latest"
HOST = settings.GPUCLOUD_HOST_NAME


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def wait_port(address: str, port: int) -> None:
    while True:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)


def wait_row(instance: Instance, status: str) -> None:
    while True:
        instance.refresh_from_db(fields=["status", "last_error"])
        if instance.status == status:
            return
        if instance.status == "failed":
            raise SystemExit(f"launch failed: {instance.last_error}")
        time.sleep(0.01)


def start_worker() -> subprocess.Popen:
    log = (Path(settings.VAR_DIR) / "bench-worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "gpucloud", "worker", "-Q", f"host.{HOST}", "-c", "2", "-P", "threads",
         "--without-gossip", "--without-mingle", "-l", "WARNING", "-n", f"bench-{os.getpid()}@%h"],
        cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    time.sleep(4)  # the worker connects to Redis
    return proc


def control_plane(user, template: Template, *, keep=None) -> float:
    started = time.perf_counter()
    instance = instance_launch(user=user, template=template, gpu_type="rtx-5090", storage_gb=10, access=["ssh"])
    wait_row(instance, "running")
    elapsed = time.perf_counter() - started
    if keep is not None:
        keep(instance)
    instance_destroy(instance=instance)
    wait_row(instance, "terminated")
    return elapsed


def raw_docker(spec_args: list[str], n: int) -> float:
    name = f"gpucloud-bench-raw-{n}"
    started = time.perf_counter()
    docker("network", "create", "--label", f"gpucloud.host={HOST}", name)
    container = docker("run", "-d", "--name", name, "--network", name, *spec_args)
    address = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container)
    wait_port(address, 22)
    elapsed = time.perf_counter() - started
    docker("rm", "-f", container)
    docker("network", "rm", name)
    return elapsed


def raw_flags(instance: Instance) -> list[str]:
    """The flags of the control plane's own container spec, as `docker run` flags."""
    workspace = Path(settings.GPUCLOUD_DATA_ROOT) / "bench-raw"
    workspace.mkdir(parents=True, exist_ok=True)
    spec = container_spec(instance=instance, workspace=str(workspace))
    flags = ["--label", f"gpucloud.host={HOST}", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
             "--pids-limit", str(spec.pids_limit), "--memory", f"{spec.memory_mb}m", "--memory-swap",
             f"{spec.memory_mb}m", "--cpus", str(min(spec.cpu_limit, os.cpu_count() or 1)), "--ipc", "private",
             "--mount", f"type=bind,source={workspace},target=/workspace", "-p", "127.0.0.1::22",
             "--log-opt", "max-size=10m", "--log-opt", "max-file=3"]  # fmt: skip
    for cap in spec.cap_add:
        flags += ["--cap-add", cap]
    for key, value in spec.env.items():
        flags += ["-e", f"{key}={value}"]
    return [*flags, IMAGE]


def cleanup() -> None:
    ids = docker("ps", "-aq", "--filter", f"label=gpucloud.host={HOST}").split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    nets = docker("network", "ls", "-q", "--filter", f"label=gpucloud.host={HOST}").split()
    if nets:
        subprocess.run(["docker", "network", "rm", *nets], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="launches of each kind (default 10)")
    args = parser.parse_args()

    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "CREATE DATABASE gpucloud_bench"],
                   capture_output=True, check=False)  # fmt: skip
    call_command("migrate", verbosity=0)
    host_sync(name=HOST, source="simulated")
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench")
    template, _ = Template.objects.update_or_create(
        slug="bench-sshd",
        defaults={"name": "Bench sshd", "image": IMAGE, "ports": [{"name": "ssh", "port": 22, "protocol": "tcp"}],
                  "access_methods": ["ssh"], "cap_add": ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE",
                                                         "NET_BIND_SERVICE", "KILL"]},
    )  # fmt: skip
    Instance.objects.filter(host__name=HOST).exclude(status__in=["terminated", "failed"]).update(status="failed")
    cleanup()
    worker = start_worker()
    flags: list[str] = []
    plane, raw = [], []
    try:
        # Warm-up (imports, connections, page cache); its spec gives the raw run's flags.
        control_plane(user, template, keep=lambda instance: flags.extend(raw_flags(instance)))
        raw_docker(flags, -1)
        for n in range(args.n):
            plane.append(control_plane(user, template))
            raw.append(raw_docker(flags, n))
            print(f"run {n + 1}/{args.n}: control plane {plane[-1]:.3f} s, docker {raw[-1]:.3f} s", flush=True)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        cleanup()
    a, b = statistics.median(plane), statistics.median(raw)
    print(f"median launch → running, control plane: {a:.3f} s")
    print(f"median docker run → port answers:       {b:.3f} s")
    print(f"ratio: {a / b:.2f} (goal ≤ 1.25)")


if __name__ == "__main__":
    main()
