"""GET /api/gpu/instances against a minimal Django JSON view, on one gunicorn server.

Serves the app with gunicorn (2 sync workers) on 127.0.0.1, then, at the same
concurrency and for the same time, requests `/bench/minimal` (a plain JsonResponse
through the same middleware) and `GET /api/gpu/instances` as a user with 20 running
instances, authenticated by API token, and a token-authenticated DRF view that does
nothing (the floor of any API view). Prints requests/s, p50 and p99 for each, their
throughput ratios (goal: the list keeps at least 50% of the minimal view's), and the
number of queries per list request for 1 and for 20 instances, answered from the
database and from the API cache (goal: the same for both sizes).

    createdb -h 127.0.0.1 -U postgres gpucloud_bench   # once; migrated by this script
    .venv/bin/python bench/api.py [--seconds 10] [--concurrency 8]

DATABASE_URL defaults to that database and REDIS_URL to redis://127.0.0.1:6379/14 (as
in production: the throttles' cache and the API cache's versions; REDIS_URL= turns
both off). The bench rows it makes are replaced on each run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_VAR = tempfile.mkdtemp(prefix="gpucloud-bench-api-")
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "bench.api_settings",
    "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gpucloud_bench"),
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
    # Production mode: no DEBUG query log, no HTTPS redirect on loopback.
    "DEBUG": "0",
    "SECURE_SSL_REDIRECT": "0",
    "SECRET_KEY": os.environ.get("SECRET_KEY", secrets.token_urlsafe(50)),
    "GPUCLOUD_ENCRYPTION_KEY": os.environ.get(
        "GPUCLOUD_ENCRYPTION_KEY", "uJ5cGNDr5ZvJ0fYk0pQnQvVnQeS1tB8mJ7W2qH3xY4A="
    ),
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "GPUCLOUD_VAR_DIR": _VAR,
    "LOG_LEVEL": "WARNING",
}
os.environ.update(BENCH_ENV)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

LIST_PATH = "/api/gpu/instances"
MINIMAL_PATH = "/bench/minimal"
AUTHENTICATED_PATH = "/bench/authenticated"


def make_user(name: str, instances: int) -> str:
    """A user with `instances` running instances (rows only: ports, host, GPU) and a token."""
    from django.contrib.auth import get_user_model
    from django.db.models import Max

    from instances.access.crypto import encrypt
    from instances.access.tokens import token_create
    from instances.models import Gpu, GpuType, Host, Instance, PortBinding
    from templates_app.models import Template

    User = get_user_model()
    old = Instance.objects.filter(owner__username=name)
    PortBinding.objects.filter(instance__in=old).delete()
    old.delete()
    User.objects.filter(username=name).delete()
    user = User.objects.create(username=name)
    host, _ = Host.objects.get_or_create(
        name="bench-host",
        defaults={"public_address": "203.0.113.5", "port_range_start": 40000, "port_range_end": 49999},
    )
    gpu_type, _ = GpuType.objects.get_or_create(
        sku="bench-gpu", defaults={"display_name": "Bench GPU", "rate_per_hour": Decimal("1.49")}
    )
    template, _ = Template.objects.get_or_create(
        slug="bench",
        defaults={
            "name": "Bench",
            "image": "bench:latest",
            "ports": [
                {"name": "ssh", "port": 22, "protocol": "tcp"},
                {"name": "jupyter", "port": 8888, "protocol": "http"},
            ],
            "access_methods": ["ssh", "jupyter"],
        },
    )
    base = (PortBinding.objects.filter(host=host).aggregate(m=Max("host_port"))["m"] or 40000) + 1
    next_index = (Gpu.objects.filter(host=host).aggregate(m=Max("index"))["m"] or 0) + 1
    for i in range(instances):
        gpu, _ = Gpu.objects.get_or_create(
            uuid=f"GPU-BENCH-{name}-{i}",
            defaults={"host": host, "index": next_index + i, "name": "Bench", "gpu_type": gpu_type},
        )
        instance = Instance.objects.create(
            owner=user,
            template=template,
            gpu_type=gpu_type,
            gpu=gpu,
            host=host,
            status="running",
            access=["ssh", "jupyter"],
            password_encrypted=encrypt(secrets.token_urlsafe(18)),
            access_token_encrypted=encrypt(secrets.token_urlsafe(24)),
        )
        for j, (svc, port) in enumerate((("ssh", 22), ("jupyter", 8888))):
            PortBinding.objects.create(
                host=host, host_port=base + 2 * i + j, instance=instance, name=svc, container_port=port,
                protocol="tcp" if svc == "ssh" else "http",
            )  # fmt: skip
    _, key = token_create(user=user, name="bench")
    return key


def queries_per_list(key: str) -> tuple[int, int]:
    """Queries of a list request answered from the database, then from the API cache."""
    from instances import cache as apicache

    client = Client(HTTP_AUTHORIZATION=f"Token {key}", HTTP_HOST="127.0.0.1")
    client.get(LIST_PATH)  # the token's last_used_at is written at most once a minute
    counts = []
    for _ in range(2):  # the first caches what it reads (with REDIS_URL), the second uses it
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(LIST_PATH)
        assert response.status_code == 200, response.content
        counts.append(len(ctx.captured_queries))
    apicache.clear()
    return counts[0], counts[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(args: tuple[int, str, dict[str, str], float, float]) -> list[float]:
    port, path, headers, start_at, stop_at = args
    latencies: list[float] = []
    while time.time() < start_at:
        time.sleep(0.001)
    while time.time() < stop_at:
        # gunicorn's sync workers close the connection after each response.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t0)
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}")
    return latencies


def load(port: int, path: str, headers: dict[str, str], seconds: float, concurrency: int) -> dict[str, float]:
    start_at = time.time() + 0.5
    with multiprocessing.Pool(concurrency) as pool:
        per_client = pool.map(_client, [(port, path, headers, start_at, start_at + seconds)] * concurrency)
    latencies = sorted(x for client in per_client for x in client)
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "n": len(latencies),
    }


@contextlib.contextmanager
def serving(extra_env: dict[str, str]) -> Iterator[int]:
    """gunicorn with 2 sync workers on a free port of 127.0.0.1, until the block ends."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "gpucloud.wsgi:application", "-w", "2", "-b", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={**os.environ, **BENCH_ENV, **extra_env, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _client((port, MINIMAL_PATH, {}, 0, time.time() + 0.01))
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    key_20 = make_user("bench-api-20", 20)
    key_1 = make_user("bench-api-1", 1)
    q1, q20 = queries_per_list(key_1), queries_per_list(key_20)
    connection.close()

    auth = {"Authorization": f"Token {key_20}"}
    with serving({}) as port:
        # Warm both workers' caches and connections before measuring.
        load(port, MINIMAL_PATH, {}, 1, args.concurrency)
        load(port, LIST_PATH, auth, 1, args.concurrency)
        minimal = load(port, MINIMAL_PATH, {}, args.seconds, args.concurrency)
        floor = load(port, AUTHENTICATED_PATH, auth, args.seconds, args.concurrency)
        listing = load(port, LIST_PATH, auth, args.seconds, args.concurrency)
    with serving({"GPUCLOUD_API_CACHE": "0"}) as port:  # the same list, every request from the database
        load(port, LIST_PATH, auth, 1, args.concurrency)
        uncached = load(port, LIST_PATH, auth, args.seconds, args.concurrency)

    print(
        f"gunicorn 2 sync workers on 127.0.0.1, concurrency {args.concurrency}, {args.seconds:g} s each, {os.cpu_count()} CPUs"
    )
    rows = (
        ("minimal JSON view", minimal),
        ("token-authenticated no-op (DRF)", floor),
        ("GET /api/gpu/instances (20)", listing),
        ("  the same, API cache off", uncached),
    )
    for label, r in rows:
        print(
            f"{label:32} {r['rps']:8.1f} req/s   p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   ({r['n']} requests)"
        )
    ratio = listing["rps"] / minimal["rps"]
    print(f"throughput ratio list with the API cache off/minimal: {uncached['rps'] / minimal['rps']:.2f}")
    print(
        f"throughput ratio token-authenticated no-op/minimal: {floor['rps'] / minimal['rps']:.2f} "
        "(DRF and token authentication alone)"
    )
    print(f"throughput ratio list/minimal: {ratio:.2f} (goal >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
    print(
        f"queries per list request: {q1[0]} with 1 instance, {q20[0]} with 20 "
        f"({'constant' if q1[0] == q20[0] else 'NOT constant'}); from the API cache: {q1[1]} and {q20[1]}"
    )


if __name__ == "__main__":
    main()
