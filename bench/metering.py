"""Times one meter run over N open usage segments on PostgreSQL (N = 1,000 and 10,000).

Goal: 10,000 segments metered in under 2 s on the development machine, with the same
number of queries for both N. Prints wall time and query count for the run that opens
the segments and for a steady-state run that extends them.

    createdb -h 127.0.0.1 -U postgres gpucloud_bench   # once; migrated by this script
    DEBUG=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/gpucloud_bench .venv/bin/python bench/metering.py

Everything the script creates is rolled back.
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

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

T0 = datetime(2026, 6, 1, tzinfo=UTC)


class Rollback(Exception):
    pass


def measure(n: int) -> list[tuple[str, float, int]]:
    from django.contrib.auth import get_user_model

    from billing import services
    from billing.models import LedgerEntry
    from instances.models import GpuType, Instance, InstanceEvent
    from templates_app.models import Template

    rows: list[tuple[str, float, int]] = []
    try:
        with transaction.atomic():
            users = [get_user_model().objects.create(username=f"bench-{n}-{i}") for i in range(50)]
            gpu_type, _ = GpuType.objects.get_or_create(
                sku="bench-gpu", defaults={"display_name": "Bench", "rate_per_hour": Decimal("1.49")}
            )
            template, _ = Template.objects.get_or_create(slug="bench", defaults={"name": "Bench", "image": "x"})
            instances = Instance.objects.bulk_create(
                Instance(owner=users[i % len(users)], template=template, gpu_type=gpu_type, status="running")
                for i in range(n)
            )
            InstanceEvent.objects.bulk_create(
                InstanceEvent(instance=inst, kind="started", source="worker", at=T0) for inst in instances
            )
            for label, at in (("open + bill", T0 + timedelta(seconds=30)), ("extend", T0 + timedelta(seconds=60))):
                with CaptureQueriesContext(connection) as ctx:
                    start = time.perf_counter()
                    result = services.meter_run(now=at)
                    elapsed = time.perf_counter() - start
                assert result.ran
                rows.append((label, elapsed, len(ctx.captured_queries)))
            assert LedgerEntry.objects.filter(user__in=users).count() == 2 * n
            raise Rollback
    except Rollback:
        pass
    return rows


def main() -> None:
    if connection.vendor != "postgresql":
        sys.exit("bench/metering.py needs PostgreSQL: set DATABASE_URL")
    call_command("migrate", verbosity=0)
    results = {n: measure(n) for n in (1_000, 10_000)}
    print(f"{'N':>7}  {'run':<12} {'wall s':>8} {'queries':>8}")
    for n, rows in results.items():
        for label, elapsed, queries in rows:
            print(f"{n:>7}  {label:<12} {elapsed:>8.3f} {queries:>8}")
    steady = {n: rows[-1] for n, rows in results.items()}
    ratio = steady[10_000][1] / steady[1_000][1]
    print(
        f"10k/1k wall-time ratio (extend): {ratio:.1f}x; goal: 10,000 segments < 2 s -> "
        f"{'met' if steady[10_000][1] < 2 else 'NOT met'}; "
        f"same query count: {'yes' if steady[10_000][2] == steady[1_000][2] else 'NO'}"
    )


if __name__ == "__main__":
    main()
