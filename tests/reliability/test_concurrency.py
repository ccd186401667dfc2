"""Many clients at once through gunicorn (real HTTP, token auth, threads) and a real worker."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import pytest
import requests

from billing.models import LedgerEntry
from billing.services import meter_run
from instances.access.tokens import token_create
from instances.models import Instance, InstanceEvent, PortBinding
from instances.services import reconcile
from tests.factories import GpuFactory, TemplateFactory, UserFactory
from tests.processes import wait_until
from tests.reliability.helpers import DOCKERD_URL, assert_nothing_leaked, containers_on, inspect_on

pytestmark = [pytest.mark.docker, pytest.mark.celery]

WEB = {"GPUCLOUD_THROTTLE_CREATE": "100000/minute"}
LAUNCH = {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh"]}
IN_BETWEEN = ("pending", "provisioning", "stopping", "starting", "terminating")


def _same_type(host, gpu_types, count: int) -> None:
    """`count` simulated GPUs on the host, all RTX 5090s."""
    host.gpus.update(gpu_type=gpu_types["rtx-5090"])
    for index in range(host.gpus.count(), count):
        GpuFactory(host=host, index=index, gpu_type=gpu_types["rtx-5090"], uuid=f"GPU-SIM-faults-{index}")


def test_200_concurrent_launches_for_2_free_gpus_grant_exactly_2(
    rel_host, gpu_types, private_dockerd, start_gunicorn, start_worker
):
    _same_type(rel_host, gpu_types, 2)
    TemplateFactory()
    keys = [token_create(user=UserFactory(username=f"rush{i}"), name="rush")[1] for i in range(20)]
    web = start_gunicorn(workers=2, threads=16, **WEB)
    start_worker()
    gate = threading.Barrier(200)

    def launch(n: int) -> requests.Response:
        session = requests.Session()
        gate.wait()
        return session.post(
            f"{web.url}/api/gpu/instances", json=LAUNCH, headers={"Authorization": f"Token {keys[n % 20]}"}, timeout=120
        )

    with ThreadPoolExecutor(200) as pool:
        answers = list(pool.map(launch, range(200)))

    codes = Counter(a.status_code for a in answers)
    assert codes == {HTTPStatus.ACCEPTED: 2, HTTPStatus.CONFLICT: 198}, codes
    for answer in answers:
        if answer.status_code == HTTPStatus.CONFLICT:
            error = answer.json()["error"]
            assert error["code"] == "instances:no-gpu-available"
            assert error["message"]
            assert "availability" in error["detail"]
    granted = Instance.objects.filter(public_id__in=[a.json()["id"] for a in answers if a.status_code == 202])
    assert Instance.objects.count() == 2
    assert granted.count() == 2
    assert len({i.gpu_id for i in granted}) == 2
    assert PortBinding.objects.count() == 2
    for instance in granted:
        wait_until(lambda i=instance: Instance.objects.get(pk=i.pk).status == "running", timeout=90, what="running")
        assert len(containers_on(DOCKERD_URL, instance=instance.public_id)) == 1
    assert_nothing_leaked(host=rel_host, docker_host=DOCKERD_URL)


def _published_ports(container: str) -> list[int]:
    bindings = inspect_on(DOCKERD_URL, container)["HostConfig"]["PortBindings"] or {}
    return [int(b["HostPort"]) for values in bindings.values() for b in values]


def test_1000_random_operations_from_several_clients_keep_every_invariant(
    alice, bob, rel_host, gpu_types, private_dockerd, start_gunicorn, start_worker
):
    _same_type(rel_host, gpu_types, 4)
    TemplateFactory()
    web = start_gunicorn(workers=2, threads=8, **WEB)
    start_worker(concurrency="8")
    clients = [(user, token_create(user=user, name=f"ops{i}")[1]) for i, user in enumerate([alice, bob] * 3)]
    unexpected: list[str] = []
    done = Counter()
    lock = threading.Lock()
    budget = iter(range(1000))

    def client(seed: int, key: str) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {key}"
        mine: list[str] = []
        for _ in budget:
            # Mostly a step the instance's current status allows (a real container change
            # each time), sometimes any step at all (a 409 is then the right answer);
            # destroys and launches now and then.
            op = rng.choices(["launch", "stop", "start", "restart", "destroy", "valid"], weights=[1, 1, 1, 1, 1, 40])[0]
            target = rng.choice(mine) if mine else None
            if op == "valid" and target:
                status = session.get(f"{web.url}/api/gpu/instances/{target}", timeout=60).json()["status"]
                op = {"running": rng.choice(["stop", "stop", "restart"]), "stopped": "start", "failed": "start"}.get(
                    status, rng.choice(["stop", "start"])
                )
            if op in ("launch", "valid") or not mine:
                op, answer = "launch", session.post(f"{web.url}/api/gpu/instances", json=LAUNCH, timeout=60)
                if answer.status_code == HTTPStatus.ACCEPTED:
                    mine.append(answer.json()["id"])
            elif op == "destroy":
                answer = session.delete(f"{web.url}/api/gpu/instances/{target}", timeout=60)
                if answer.status_code == HTTPStatus.ACCEPTED:
                    mine.remove(target)
            else:
                answer = session.post(f"{web.url}/api/gpu/instances/{target}/{op}", timeout=60)
            ok = answer.status_code in (HTTPStatus.ACCEPTED, HTTPStatus.CONFLICT)
            if answer.status_code == HTTPStatus.CONFLICT:
                ok = answer.json()["error"]["code"] in ("instances:invalid-state", "instances:no-gpu-available")
            with lock:
                done[(op, answer.status_code)] += 1
                if not ok:
                    unexpected.append(f"{op}: {answer.status_code} {answer.text[:200]}")
            threading.Event().wait(rng.uniform(0, 0.3))

    threads = [threading.Thread(target=client, args=(n, key)) for n, (_, key) in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(done.values()) == 1000
    assert not unexpected, unexpected[:10]
    for op in ("launch", "stop", "start", "destroy"):  # real transitions happened among the 409s
        assert done[(op, 202)], done

    # Let the worker finish what was asked, then one reconciler run.
    wait_until(
        lambda: not Instance.objects.filter(status__in=IN_BETWEEN).exists(),
        timeout=240,
        every=1,
        what="every instance to settle",
    )
    reconcile.host_reconcile(host=rel_host)
    meter_run()

    # At most one active instance per GPU, in the rows and in the containers.
    active = list(Instance.objects.filter(status__in=Instance.GPU_HOLDING).values_list("gpu_id", flat=True))
    assert None not in active
    assert len(active) == len(set(active))
    running = {i.public_id: i for i in Instance.objects.filter(status="running").select_related("gpu")}
    containers = {
        inspect_on(DOCKERD_URL, c)["Config"]["Labels"]["gpucloud.instance"]: c for c in containers_on(DOCKERD_URL)
    }
    # No container without an active row, and one for every running row.
    assert set(containers) == set(running)
    devices = [
        next(e for e in inspect_on(DOCKERD_URL, c)["Config"]["Env"] if e.startswith("NVIDIA_VISIBLE_DEVICES="))
        for c in containers.values()
    ]
    assert len(devices) == len(set(devices))
    for public_id, container in containers.items():
        assert inspect_on(DOCKERD_URL, container)["State"]["Running"]
        assert f"NVIDIA_VISIBLE_DEVICES={running[public_id].gpu.index}" in devices

    # No host port bound twice, and Docker publishes exactly the bound ones.
    bound = list(PortBinding.objects.filter(host=rel_host).values_list("host_port", flat=True))
    assert len(bound) == len(set(bound))
    published = [p for c in containers.values() for p in _published_ports(c)]
    assert len(published) == len(set(published))
    assert set(published) == set(
        PortBinding.objects.filter(instance__status="running").values_list("host_port", flat=True)
    )

    # Every `started` has at most one `ended`, and every `ended` closes a `started`.
    segments = InstanceEvent.objects.filter(kind__in=["started", "ended"]).order_by("instance_id", "id")
    by_instance: dict[int, list[str]] = defaultdict(list)
    for event in segments:
        by_instance[event.instance_id].append(event.kind)
    for instance_id, kinds in by_instance.items():
        expected = ["started", "ended"] * (len(kinds) // 2) + ["started"] * (len(kinds) % 2)
        assert kinds == expected, (instance_id, kinds)
        if kinds[-1] == "started":
            assert Instance.objects.get(pk=instance_id).status == "running"

    # Every ledger entry is traced to a usage segment opened by a lifecycle fact (or a payment).
    for entry in LedgerEntry.objects.select_related("usage__start_event"):
        if entry.usage is None:
            assert entry.kind in ("topup", "refund", "adjustment"), entry
            continue
        start = entry.usage.start_event
        assert start.instance_id == entry.usage.instance_id
        assert start.kind == ("started" if entry.usage.kind == "gpu" else "ended")
    assert LedgerEntry.objects.filter(kind="gpu-usage").exists()
    assert_nothing_leaked(host=rel_host, docker_host=DOCKERD_URL)
    print(json.dumps({f"{op} {code}": n for (op, code), n in sorted(done.items())}))
