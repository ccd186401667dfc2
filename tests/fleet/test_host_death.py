"""A host dies and comes back, with two real workers on two real Docker engines.

Host a's worker runs on the shared engine, host b's on the suite's own dockerd; both
beat every second. b's worker is SIGKILLed (its engine and container keep running, as
when a workstation's worker or network fails): b is unreachable within the bound, its
instance shows `unreachable` and is billed to b's last beat and not a second more, a
launch pending on b is failed and its GPU released, new launches go to a. b's worker
starts again: b is back, its reconciler finds the container running, and billing
resumes from that moment.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import LedgerEntry, UsageRecord
from billing.services import meter_run
from instances.models import Gpu, Host, Instance, InstanceEvent
from instances.services import instance_launch
from instances.services.fleet import gpus_cordon
from instances.services.liveness import hosts_liveness, liveness_bound
from tests.containers import wait_for_status
from tests.fleet.conftest import HOST_A, HOST_B
from tests.processes import wait_until

pytestmark = [pytest.mark.docker]

Kind = InstanceEvent.Kind


def launch(user, template, gpu_type):
    return instance_launch(user=user, template=template.slug, gpu_type=gpu_type, storage_gb=10, access=["ssh"])


def marked(host: Host, status: str) -> bool:
    hosts_liveness()
    host.refresh_from_db()
    return host.status == status


def ledger_total(record: UsageRecord) -> Decimal:
    return LedgerEntry.objects.filter(usage=record).aggregate(total=Sum("amount_usd"))["total"] or Decimal(0)


def test_a_dead_host_bills_nothing_from_its_last_beat_and_resumes_when_seen_running(
    settings, alice, two_hosts, fleet, fleet_template
):
    settings.GPUCLOUD_PLACEMENT_POLICY = "spread"
    a, b = two_hosts
    fleet(HOST_A)
    worker_b = fleet(HOST_B)
    on_a = launch(alice, fleet_template, "rtx-5090")
    on_b = launch(alice, fleet_template, "rtx-5090")
    assert (on_a.host, on_b.host) == (a, b)  # spread: one each
    wait_for_status(on_a, "running")
    wait_for_status(on_b, "running")
    wait_until(
        lambda: marked(b, "online") and b.facts.get("heartbeat", {}).get("engine_ok"), timeout=30, what="b beats"
    )

    worker_b.kill()
    meter_run()  # b still looks online: its segment is billed on past its last beat for now
    # A launch that lands on b after its worker died (a's PRO 6000 cordoned) waits there.
    gpus_cordon(gpus=Gpu.objects.filter(host=a, gpu_type__sku="rtx-pro-6000"), cordoned=True)
    stranded = launch(alice, fleet_template, "rtx-pro-6000")
    assert stranded.host == b
    gpus_cordon(gpus=Gpu.objects.filter(host=a), cordoned=False)

    bound = liveness_bound().total_seconds()
    wait_until(lambda: marked(b, "unreachable"), timeout=bound + 10, what="b marked unreachable")
    last_beat = b.last_heartbeat_at
    assert "no heartbeat since" in b.status_reason

    # The owner sees it unreachable, with why.
    api = APIClient()
    api.force_authenticate(alice)
    body = api.get(f"/api/gpu/instances/{on_b.public_id}").json()
    assert body["status"] == "unreachable", body
    assert "no heartbeat since" in body["error"]
    assert api.get(f"/api/gpu/instances/{on_a.public_id}").json()["status"] == "running"

    # Its GPU segment ends at b's last beat, to the second, and the ledger holds exactly that.
    meter_run()
    gpu = UsageRecord.objects.get(instance=on_b, kind=UsageRecord.Kind.GPU)
    on_b.refresh_from_db()
    assert gpu.ended_at == last_beat
    seconds = int((last_beat - gpu.started_at).total_seconds())
    assert gpu.duration_seconds == seconds
    cost = (gpu.rate_usd * max(gpu.minimum_seconds, seconds) / 3600).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert gpu.cost_usd == cost
    assert ledger_total(gpu) == -cost
    # Its workspace is not billed for the outage either.
    storage = UsageRecord.objects.filter(instance=on_b, kind=UsageRecord.Kind.STORAGE)
    assert all(r.ended_at == r.started_at for r in storage)
    assert on_b.events.filter(kind=Kind.HOST_UNREACHABLE, at=last_beat).exists()

    # The launch pending on b is failed, its GPU and ports released; new launches go to a.
    stranded.refresh_from_db()
    assert stranded.status == Instance.Status.FAILED
    assert stranded.gpu is None
    assert not stranded.ports.exists()
    assert "unreachable" in stranded.last_error
    elsewhere = launch(alice, fleet_template, "rtx-pro-6000")
    assert elsewhere.host == a
    wait_for_status(elsewhere, "running")

    # b's worker is back: b is online, its container is seen running, billed from then.
    worker_back_at = timezone.now()
    fleet(HOST_B)
    wait_until(lambda: marked(b, "online"), timeout=60, what="b back online")
    resumed = wait_until(
        lambda: on_b.events.filter(kind=Kind.STARTED, data__after_outage=True).first(),
        timeout=60,
        what="b's reconciler to see its container running",
    )
    on_b.refresh_from_db()
    assert on_b.status == Instance.Status.RUNNING
    assert resumed.at > worker_back_at  # nothing between b's last beat and its return
    meter_run()
    records = list(UsageRecord.objects.filter(instance=on_b, kind=UsageRecord.Kind.GPU).order_by("started_at"))
    assert [r.started_at for r in records] == [gpu.started_at, resumed.at]
    assert records[0].closed_at is not None
    assert records[1].ended_at is None
    assert api.get(f"/api/gpu/instances/{on_b.public_id}").json()["status"] == "running"
    body = api.get(f"/api/gpu/instances/{on_b.public_id}").json()
    assert body["error"] is None
