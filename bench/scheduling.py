"""Scheduling across a fleet: 100 hosts x 10 GPUs (rows only, no Docker) in PostgreSQL,
16 concurrent clients launching through the service layer until every GPU is taken.

Prints launches admitted per second, the p50/p99 time of one scheduling decision
(`gpu_take`: rank the hosts, lock a GPU and its host, check CPU/RAM under the lock),
and double allocations (a GPU held twice, a host port bound twice: must be 0), beside
the anchors' published rates. Goal: p99 < 20 ms and ≥ 200 launches/s admitted on the
2-core development machine. Printed, never asserted.

    .venv/bin/python bench/scheduling.py [--policy spread|pack] [--clients 16]

Clients are processes (forked after Django is set up), each with its own user, so the
per-user admission lock never serializes them; tasks go to an in-memory broker (no
worker consumes them). Uses its own database, gpucloud_fleet_bench (created and
migrated on first use), and empties the lifecycle's tables before each run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gpucloud_fleet_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/8")
os.environ["CELERY_BROKER_URL"] = "memory://"  # launches enqueue; nobody needs to consume
os.environ.setdefault("GPUCLOUD_VAR_DIR", str(ROOT / "var" / "bench-scheduling"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpucloud.settings")
# The bench measures placement, not the balance check: its users have no ledger.
os.environ.setdefault("GPUCLOUD_ADMISSION_CHECKS", "")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.db.models import Count  # noqa: E402

from instances.errors import NoCapacity  # noqa: E402
from instances.models import Gpu, GpuType, Host, Instance, InstanceEvent, PortBinding  # noqa: E402
from instances.services import instance_launch, scheduling  # noqa: E402
from instances.services import launch as launch_module  # noqa: E402
from templates_app.models import Template  # noqa: E402

HOSTS, GPUS_PER_HOST = 100, 10
ANCHORS = (
    "Kubernetes kube-scheduler: ~300-900 pods/s on 500 nodes (published scheduler throughput)",
    "Slurm: ~500 jobs/s submitted and scheduled (published high-throughput figure)",
)


def database_ready() -> None:
    db = settings.DATABASES["default"]
    if "bench" not in db["NAME"]:
        raise SystemExit(f"refusing database {db['NAME']!r}: its name must say bench")
    subprocess.run(
        ["createdb", "-h", db["HOST"] or "127.0.0.1", "-U", db["USER"] or "postgres", db["NAME"]],
        capture_output=True,
        check=False,
    )
    call_command("migrate", verbosity=0)


def fleet_make() -> Template:
    """Empty the lifecycle's tables; 100 hosts of 10 GPUs (two types, five each)."""
    with connection.cursor() as cur:
        tables = ", ".join(m._meta.db_table for m in (InstanceEvent, PortBinding, Instance, Gpu, Host))
        cur.execute(f"TRUNCATE {tables} CASCADE")
    types = [
        GpuType.objects.update_or_create(sku=sku, defaults={"display_name": name, "rate_per_hour": rate})[0]
        for sku, name, rate in (("bench-a", "Bench A", "1.00"), ("bench-b", "Bench B", "2.00"))
    ]
    hosts = Host.objects.bulk_create(
        Host(name=f"bench-{i:03d}", public_address="127.0.0.1", port_range_start=20000, port_range_end=20999)
        for i in range(HOSTS)
    )
    Gpu.objects.bulk_create(
        Gpu(host=h, index=i, uuid=f"GPU-bench-{h.name}-{i}", name="Bench", gpu_type=types[i % 2], simulated=True)
        for h in hosts
        for i in range(GPUS_PER_HOST)
    )
    template, _ = Template.objects.update_or_create(
        slug="bench-sched",
        defaults={"name": "Bench", "image": "bench:latest", "ports": [{"name": "ssh", "port": 22, "protocol": "tcp"}]},
    )
    with connection.cursor() as cur:
        for model in (Host, Gpu, Instance, PortBinding, InstanceEvent):
            cur.execute(f"ANALYZE {model._meta.db_table}")
    return template


def client(index: int, template_slug: str, results: multiprocessing.Queue) -> None:
    """Launch until no GPU is left; report admitted launches and decision times (s)."""
    connections.close_all()  # a forked child never shares its parent's connection
    decisions: list[float] = []
    take = scheduling.gpu_take

    def timed_take(**kwargs):  # the one scheduling decision, timed where launch calls it
        started = time.perf_counter()
        try:
            return take(**kwargs)
        finally:
            decisions.append(time.perf_counter() - started)

    launch_module.gpu_take = timed_take  # type: ignore[attr-defined]
    user, _ = get_user_model().objects.get_or_create(username=f"bench-sched-{index}")
    admitted, tries, exhausted = 0, 0, set()
    while len(exhausted) < 2:
        sku = ("bench-a", "bench-b")[tries % 2]
        tries += 1
        if sku in exhausted:
            continue
        try:
            instance_launch(user=user, template=template_slug, gpu_type=sku, storage_gb=10, access=[])
            admitted += 1
        except NoCapacity:
            exhausted.add(sku)
    results.put((admitted, decisions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=("spread", "pack"), default="spread")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    settings.GPUCLOUD_PLACEMENT_POLICY = args.policy
    database_ready()
    template = fleet_make()
    connections.close_all()
    results: multiprocessing.Queue = multiprocessing.Queue()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=client, args=(i, template.slug, results)) for i in range(args.clients)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    collected = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - started
    for p in procs:
        p.join(timeout=60)
    admitted = sum(n for n, _ in collected)
    decisions = sorted(d for _, ds in collected for d in ds)
    held = Instance.objects.filter(status__in=Instance.GPU_HOLDING).values("gpu_id").annotate(n=Count("id"))
    twice = held.filter(n__gt=1).count()
    ports_twice = PortBinding.objects.values("host_id", "host_port").annotate(n=Count("id")).filter(n__gt=1).count()
    per_host = Instance.objects.values("host_id").annotate(n=Count("id")).order_by()
    p50 = statistics.median(decisions) * 1000
    p99 = decisions[min(len(decisions) - 1, int(len(decisions) * 0.99))] * 1000
    print(f"fleet: {HOSTS} hosts x {GPUS_PER_HOST} GPUs, {args.clients} concurrent clients, policy {args.policy}")
    print(f"launches admitted: {admitted} of {HOSTS * GPUS_PER_HOST} GPUs in {wall:.2f} s")
    print(f"admitted per second: {admitted / wall:.0f}   (goal >= 200)")
    print(f"scheduling decision: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(decisions)}   (goal p99 < 20 ms)")
    print(f"double allocations: {twice} GPUs held twice, {ports_twice} host ports bound twice   (must be 0)")
    print(f"hosts used: {per_host.count()}; most instances on one host: {max((r['n'] for r in per_host), default=0)}")
    print("anchors:")
    for anchor in ANCHORS:
        print(f"  {anchor}")


if __name__ == "__main__":
    main()
