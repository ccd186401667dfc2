"""Times one meter run over N open usage segments on PostgreSQL (N = 1,000 to 100,000).

Goal: 100,000 segments metered in under 2 s on the development machine, with the same
number of queries for every N. Prints wall time and query count for the run that opens
the segments and for a steady-state run that extends them.

    createdb -h 127.0.0.1 -U postgres gpucloud_bench_meter   # once; migrated by this script
    DEBUG=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/gpucloud_bench_meter .venv/bin/python bench/metering.py

Each meter run commits, as in production (so PostgreSQL can prune the row versions a
run leaves); the lifecycle's tables are analysed after the data is made, and every table after each
run, as autovacuum would. The script refuses a database whose name does not say "bench", and
empties the billing and instance tables before and after each N.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpucloud.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from billing.models import BillingAccount, GpuRate, LedgerEntry, MeterMark, UsageRecord  # noqa: E402
from billing.services import meter_run  # noqa: E402
from instances.models import GpuType, Instance, InstanceEvent  # noqa: E402
from templates_app.models import Template  # noqa: E402

T0 = datetime(2026, 6, 1, tzinfo=UTC)


TABLES = (LedgerEntry, UsageRecord, MeterMark, BillingAccount, GpuRate, InstanceEvent, Instance)


def reset() -> None:
    names = ", ".join(model._meta.db_table for model in TABLES)
    with connection.cursor() as cur:
        cur.execute(f"TRUNCATE {names} CASCADE")
    get_user_model().objects.filter(username__startswith="bench-").delete()


def analyze(*models: type) -> None:
    with connection.cursor() as cur:
        for model in models or TABLES:
            cur.execute(f"ANALYZE {model._meta.db_table}")


def measure(n: int) -> list[tuple[str, float, int]]:
    rows: list[tuple[str, float, int]] = []
    reset()
    with transaction.atomic():
        users = [get_user_model().objects.create(username=f"bench-{n}-{i}") for i in range(50)]
        gpu_type, _ = GpuType.objects.get_or_create(
            sku="bench-gpu", defaults={"display_name": "Bench", "rate_per_hour": Decimal("1.49")}
        )
        template, _ = Template.objects.get_or_create(slug="bench", defaults={"name": "Bench", "image": "x"})
        instances = Instance.objects.bulk_create(
            Instance(owner=users[i % len(users)], template=template, gpu_type=gpu_type, status=Instance.Status.RUNNING)
            for i in range(n)
        )
        InstanceEvent.objects.bulk_create(
            InstanceEvent(instance=inst, kind=InstanceEvent.Kind.STARTED, source=InstanceEvent.Source.WORKER, at=T0)
            for inst in instances
        )
    # The facts only: statistics of an empty usage table would be for a deployment that never billed.
    analyze(Instance, InstanceEvent)
    for label, at in (("open + bill", T0 + timedelta(seconds=30)), ("extend", T0 + timedelta(seconds=60))):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            result = meter_run(now=at)
            elapsed = time.perf_counter() - start
        assert result.ran
        rows.append((label, elapsed, len(ctx.captured_queries)))
        if os.environ.get("BENCH_QUERIES"):  # where the time goes, statement by statement
            for q in ctx.captured_queries:
                print(f"  {n:>7} {label:<12} {float(q['time']):>7.3f}  {q['sql'][:110]}")
        analyze()
    assert LedgerEntry.objects.filter(user__in=users).count() == 2 * n
    reset()
    return rows


def main() -> None:
    if connection.vendor != "postgresql" or "bench" not in connection.settings_dict["NAME"]:
        sys.exit("bench/metering.py empties its tables: give it a PostgreSQL database named *bench* (DATABASE_URL)")
    call_command("migrate", verbosity=0)
    sizes = (1_000, 10_000, 100_000)
    results = {n: measure(n) for n in sizes}
    print(f"{'N':>7}  {'run':<12} {'wall s':>8} {'queries':>8}")
    for n, rows in results.items():
        for label, elapsed, queries in rows:
            print(f"{n:>7}  {label:<12} {elapsed:>8.3f} {queries:>8}")
    steady = {n: rows[-1] for n, rows in results.items()}
    small, large = steady[sizes[0]], steady[sizes[-1]]
    print(
        f"{sizes[-1]:,}/{sizes[0]:,} wall-time ratio (extend): {large[1] / small[1]:.1f}x; goal: "
        f"{sizes[-1]:,} segments < 2 s -> {'met' if large[1] < 2 else 'NOT met'}; "
        f"query count flat in N: {'yes' if all(len({rows[k][2] for rows in results.values()}) == 1 for k in (0, 1)) else 'NO'}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
