"""Host preflight (instances/preflight.py): runc and the NVIDIA Container Toolkit must
carry the fixes of known container escapes before a host takes instances."""

from __future__ import annotations

import re
import shutil
import subprocess
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.core.management import call_command

from instances import selectors, services
from instances.errors import NoCapacity
from instances.host.preflight import Probe, host_preflight, preflight_evaluate, preflight_probe, version_parse
from instances.models import Host, Instance
from instances.tasks import _preflight_on_worker_start
from tests.factories import GpuFactory, GpuTypeFactory, HostFactory, TemplateFactory
from tests.processes import wait_until

OLD_RUNC = "runc version 1.1.11\ncommit: v1.1.11-0-g4bccb38c\nspec: 1.0.2-dev\ngo: go1.20.12\nlibseccomp: 2.5.4\n"
NEW_RUNC = "runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\nspec: 1.0.2-dev\ngo: go1.20.13\nlibseccomp: 2.5.4\n"
NEW_TOOLKIT = "NVIDIA Container Toolkit CLI version 1.17.8\ncommit: f202b80a9b9d0db00d9b1d73c0128c8962c55f4d\n"
DEBIAN_RUNC = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\n"
DEBIAN_CHANGELOG = (
    "runc (1.1.5+ds1-1+deb12u1) bookworm-security; urgency=high\n\n  * Team upload.\n"
    "  * CVE-2024-21626: several container breakouts due to internally leaked fds\n\n"
    " -- Shengjing Zhu <zhsj@debian.org>  Fri, 02 Feb 2024 21:53:05 +0800\n\n"
    "runc (1.1.5+ds1-1) unstable; urgency=medium\n"
)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("runc version 1.1.12", (1, 1, 12, 1)),
        (NEW_RUNC, (1, 1, 12, 1)),
        ("runc version 1.1.12-rc.1", (1, 1, 12, 0)),  # a release candidate comes before its release
        ("runc version v1.1.12-0-g51d5e94", (1, 1, 12, 1)),  # Docker's RuncCommit: a git describe, not a pre-release
        (DEBIAN_RUNC, (1, 1, 5, 1)),
        ("NVIDIA Container Runtime Hook version 1.17.8\ncommit: abc", (1, 17, 8, 1)),
        ("NVIDIA Container Toolkit CLI version 1.9.10", (1, 9, 10, 1)),
        ("nvidia-ctk version 1.17", (1, 17, 0, 1)),
        ("version 1.17.8~rc.2", (1, 17, 8, 0)),
    ],
)
def test_versions_are_parsed_from_what_the_tools_print(output, expected):
    found = version_parse(output)
    assert found is not None
    assert (found.major, found.minor, found.patch, found.release) == expected


def test_no_version_in_the_output_is_none():
    assert version_parse("") is None
    assert version_parse("bash: runc: command not found") is None


@pytest.mark.parametrize(
    ("toolkit", "missing"),
    [
        ("1.9.10", ["CVE-2024-0132", "CVE-2025-23359", "CVE-2025-23266"]),  # numbers, not text: 1.9 < 1.16
        ("1.16.1", ["CVE-2024-0132", "CVE-2025-23359", "CVE-2025-23266"]),
        ("1.16.2", ["CVE-2025-23359", "CVE-2025-23266"]),
        ("1.17.3", ["CVE-2025-23359", "CVE-2025-23266"]),
        ("1.17.4", ["CVE-2025-23266"]),
        ("1.17.7", ["CVE-2025-23266"]),
        ("1.17.8-rc.1", ["CVE-2025-23266"]),
        ("1.17.8", []),
        ("1.18.0", []),
        ("2.0.0", []),
    ],
)
def test_the_toolkit_must_carry_every_fix(toolkit, missing):
    result = preflight_evaluate(
        runc_output=NEW_RUNC, toolkit_output=f"NVIDIA Container Toolkit CLI version {toolkit}", needs_toolkit=True
    )
    check = next(c for c in result.checks if c.component == "nvidia-container-toolkit")
    assert check.cves == missing
    assert check.ok is (not missing)
    assert result.blocked is bool(missing)


@pytest.mark.parametrize(
    ("runc", "ok"),
    [("1.1.11", False), ("1.1.12-rc.1", False), ("1.1.12", True), ("1.1.13", True), ("1.2.0", True), ("1.0.3", False)],
)
def test_runc_must_carry_the_fix_of_cve_2024_21626(runc, ok):
    result = preflight_evaluate(runc_output=f"runc version {runc}", toolkit_output=None, needs_toolkit=False)
    assert result.ok is ok
    assert result.blocked is (not ok)
    if not ok:
        assert result.checks[0].cves == ["CVE-2024-21626"]
        assert f"runc {runc} is below 1.1.12" in result.message


def test_simulated_gpus_need_no_toolkit_but_real_ones_do():
    simulated = preflight_evaluate(runc_output=NEW_RUNC, toolkit_output=None, needs_toolkit=False)
    assert simulated.ok
    assert [c.component for c in simulated.checks] == ["runc"]
    real = preflight_evaluate(runc_output=NEW_RUNC, toolkit_output=None, needs_toolkit=True)
    assert real.blocked
    assert "nvidia-container-toolkit did not report a version" in real.message
    # A missing runc is a failure too, never a pass.
    assert preflight_evaluate(runc_output=None, toolkit_output=None, needs_toolkit=False).blocked


def test_a_distribution_backport_counts_only_for_the_exact_package_that_names_the_cve():
    patched = preflight_evaluate(
        runc_output=DEBIAN_RUNC, toolkit_output=None, needs_toolkit=False, runc_changelog=DEBIAN_CHANGELOG
    )
    assert patched.ok, patched.message
    assert "backported" in patched.message
    # The same upstream version without the security upload's changelog: refused.
    unpatched = DEBIAN_RUNC.replace("-1+deb12u1", "-1")
    assert preflight_evaluate(
        runc_output=unpatched, toolkit_output=None, needs_toolkit=False, runc_changelog=DEBIAN_CHANGELOG
    ).blocked
    # A changelog that does not name the CVE: refused.
    assert preflight_evaluate(
        runc_output=DEBIAN_RUNC,
        toolkit_output=None,
        needs_toolkit=False,
        runc_changelog=DEBIAN_CHANGELOG.replace("CVE-2024-21626", "CVE-2023-0000"),
    ).blocked


@pytest.fixture
def real_gpu_host(db):
    """A host with one real (non-simulated) GPU of its own type, and a template to launch."""
    gpu_type = GpuTypeFactory(sku="sec-real", display_name="Real GPU", rate_per_hour=Decimal("1.00"))
    host = HostFactory(name="gpu-ws-sec")
    GpuFactory(host=host, index=0, uuid="GPU-6f0c1d2e-0000-4000-8000-000000000001", gpu_type=gpu_type, simulated=False)
    TemplateFactory()
    return host


def _launch(user):
    return services.instance_launch(user=user, template="test-sshd", gpu_type="sec-real", storage_gb=20, access=[])


def _free(sku: str) -> int:
    return next(row["free"] for row in selectors.availability() if row["sku"] == sku)


def test_a_host_with_real_gpus_takes_nothing_until_checked_nor_when_it_fails(real_gpu_host, alice, olga, client):
    # Never checked: not schedulable.
    assert _free("sec-real") == 0
    with pytest.raises(NoCapacity):
        _launch(alice)

    result = host_preflight(
        host=real_gpu_host,
        probe=Probe(runc_output=OLD_RUNC, toolkit_output=NEW_TOOLKIT.replace("1.17.8", "1.17.4"), runc_changelog=""),
        override=False,
    )
    assert result.blocked
    facts = Host.objects.get(pk=real_gpu_host.pk).facts["preflight"]
    assert facts["blocked"] is True
    assert {c["component"]: c["cves"] for c in facts["checks"]} == {
        "nvidia-container-toolkit": ["CVE-2025-23266"],
        "runc": ["CVE-2024-21626"],
        "workspace-quota": [],  # quotas work here (loop devices)
    }
    assert _free("sec-real") == 0
    with pytest.raises(NoCapacity):
        _launch(alice)
    assert not Instance.objects.exists()

    # The operator sees why on the Host page, and how to override.
    client.force_login(olga)
    page = client.get(f"/admin/instances/host/{real_gpu_host.pk}/change/")
    assert page.status_code == HTTPStatus.OK
    text = re.sub(r"\s+", " ", page.content.decode())
    assert "Refused: this host takes no instances because" in text
    assert "runc 1.1.11 is below 1.1.12: open to CVE-2024-21626" in text
    assert "nvidia-container-toolkit 1.17.4 is below 1.17.8: open to CVE-2025-23266" in text
    assert "GPUCLOUD_PREFLIGHT_OVERRIDE=1" in text
    assert "REFUSED" in client.get("/admin/instances/host/").content.decode()

    # Fixed: the next check lets it take instances.
    host_preflight(host=real_gpu_host, probe=Probe(runc_output=NEW_RUNC, toolkit_output=NEW_TOOLKIT, runc_changelog=""))
    assert _free("sec-real") == 1
    instance = _launch(alice)
    assert instance.host == real_gpu_host


def test_the_override_lets_a_failing_host_take_instances_knowingly(real_gpu_host, alice, olga, client, settings):
    settings.GPUCLOUD_PREFLIGHT_OVERRIDE = True
    result = host_preflight(
        host=real_gpu_host, probe=Probe(runc_output=OLD_RUNC, toolkit_output=None, runc_changelog="")
    )
    assert (result.ok, result.blocked, result.overridden) == (False, False, True)
    assert result.message.startswith("Overridden by GPUCLOUD_PREFLIGHT_OVERRIDE=1")
    assert _launch(alice).host == real_gpu_host
    client.force_login(olga)
    text = client.get(f"/admin/instances/host/{real_gpu_host.pk}/change/").content.decode()
    assert "Overridden by GPUCLOUD_PREFLIGHT_OVERRIDE=1" in text


def test_the_real_preflight_of_this_machine(tenant_host, capsys):
    """What this machine's runc really reports (recorded in docs/reliability.md)."""
    probe = preflight_probe()
    reported = subprocess.run(["runc", "--version"], capture_output=True, text=True, check=True).stdout
    assert probe.runc_output == reported
    result = host_preflight(host=tenant_host)
    runc = next(c for c in result.checks if c.component == "runc")
    assert runc.found == str(version_parse(reported))
    # Simulated GPUs only: the toolkit is not asked for; workspace quotas are.
    assert [c.component for c in result.checks] == ["runc", "workspace-quota"]
    assert Host.objects.get(pk=tenant_host.pk).facts["preflight"]["message"] == result.message
    print(f"\nrunc --version: {reported.splitlines()[0]} | {reported.splitlines()[1]}\npreflight: {result.message}")
    # This machine (Debian 12) runs runc 1.1.5+ds1-1+deb12u1, the security upload that
    # carries the fix: it must pass, and must say the fix is a backport.
    if "+deb12u1" in reported:
        assert result.ok
        assert "backported" in result.message
    assert result.ok is (not result.blocked)
    assert shutil.which("nvidia-ctk") is None or probe.toolkit_output


@pytest.mark.django_db
def test_sync_host_runs_the_preflight(gpu_types, capsys):
    call_command("sync_host", name="ws-sec", source="simulated")
    out = capsys.readouterr().out
    assert "Preflight: Passed" in out or "Preflight: Refused" in out
    assert "preflight" in Host.objects.get(name="ws-sec").facts


@pytest.mark.celery
def test_the_worker_runs_the_preflight_when_it_starts(celery_worker, tenant_host):
    # The worker_ready handler, as the worker calls it at start: the check runs on the worker.
    assert "preflight" not in Host.objects.get(pk=tenant_host.pk).facts
    _preflight_on_worker_start()

    def recorded() -> dict | None:
        facts = Host.objects.get(pk=tenant_host.pk).facts
        return facts if "preflight" in facts else None

    facts = wait_until(recorded, timeout=30, what="the worker's preflight")
    assert "runc" in facts["preflight"]["message"]
    assert facts["preflight"]["checks"][0]["component"] == "runc"
