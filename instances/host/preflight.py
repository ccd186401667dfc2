"""Host preflight: is this host's container stack patched against known escapes?

A container that breaks out owns the host and every other tenant on it. Before a host
with real GPUs takes instances, its worker checks:

- the NVIDIA Container Toolkit (`nvidia-ctk --version`, else
  `nvidia-container-toolkit --version`) against the fixes of CVE-2024-0132 (1.16.2),
  CVE-2025-23359 (1.17.4) and CVE-2025-23266 (1.17.8, an image's LD_PRELOAD run by the
  toolkit's hook on the host);
- runc (`runc --version`, else the engine's `docker info` RuncCommit) against the fix
  of CVE-2024-21626 (1.1.12, leaked file descriptors).

Hosts with only simulated GPUs need no toolkit (their containers get no device
request), so only runc is checked there. A distribution may backport a fix without
changing the upstream version (Debian's runc 1.1.5+ds1-1+deb12u1 carries the fix of
CVE-2024-21626): a version below the fix passes only when the installed package's own
changelog, for exactly the reported version, names the CVE.

It also checks that workspaces can be held to their size (instances.host.loopfs: a
small image is made, mounted and written past its size). A host set to loop quotas
where they do not work is refused like an unpatched one; a host whose operator chose
GPUCLOUD_WORKSPACE_QUOTA=none takes instances and is flagged. How the container's
writable layer is bounded (the storage driver's `--storage-opt size=`, or nothing but
the engine's disk) is reported beside the checks.

The result goes to `Host.facts["preflight"]`; the scheduler skips a host whose result
is `blocked` (and a host with real GPUs that was never checked). An operator who
accepts the risk sets GPUCLOUD_PREFLIGHT_OVERRIDE=1 on that host's worker: the host
then takes instances and its facts say it was overridden.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.host import loopfs
from instances.host.runtime import get_runtime
from instances.models import Host

logger = logging.getLogger("instances.host.preflight")

# (version that fixes it, CVE); a found version must be at or above every one.
TOOLKIT_FIXES = (("1.16.2", "CVE-2024-0132"), ("1.17.4", "CVE-2025-23359"), ("1.17.8", "CVE-2025-23266"))
RUNC_FIXES = (("1.1.12", "CVE-2024-21626"),)

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?([-~+][0-9A-Za-z.~+-]*)?")
# A suffix that makes a version come *before* its release (1.17.8-rc.1 < 1.17.8). A git
# describe suffix (-0-g51d5e94) or a distribution's (+ds1-1+deb12u1) does not.
_PRERELEASE = re.compile(r"^[-~.]?(rc|alpha|beta|pre|dev)", re.IGNORECASE)
OVERRIDE_HINT = "set GPUCLOUD_PREFLIGHT_OVERRIDE=1 on this host's worker to take instances anyway"


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int
    release: int  # 0 for a pre-release, 1 for a release: orders 1.17.8-rc.1 before 1.17.8
    text: str = field(compare=False, default="")

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor}.{self.patch}"


def version_parse(text: str) -> Version | None:
    """The first version number in a tool's output (`runc version 1.1.12`), or None."""
    for line in (text or "").splitlines():
        # "commit: v1.1.12-0-g51d5e94" and "spec: 1.0.2-dev" lines are not the version.
        if line.strip().lower().startswith(("spec", "go", "libseccomp", "commit")):
            continue
        found = _VERSION.search(line)
        if found:
            major, minor, patch, suffix = found.groups()
            pre = bool(suffix and _PRERELEASE.match(suffix))
            return Version(int(major), int(minor), int(patch or 0), 0 if pre else 1, found.group(0).lstrip("v"))
    return None


def version_below(found: Version, required: str) -> bool:
    need = version_parse(required)
    if need is None:
        raise ValueError(f"not a version: {required!r}")
    return found < need


@dataclass
class Check:
    component: str  # "nvidia-container-toolkit" or "runc"
    ok: bool
    found: str  # the version seen, "" when the tool did not answer
    required: str
    message: str
    cves: list[str] = field(default_factory=list)  # the fixes missing
    blocking: bool = True  # False: a failure flags the host but does not refuse it


@dataclass
class PreflightResult:
    ok: bool  # every check passed
    blocked: bool  # the scheduler skips the host (not ok, not overridden)
    overridden: bool
    message: str
    checks: list[Check]
    checked_at: str = ""
    writable_layer: str = ""  # what bounds a container's writable layer, in words

    def as_facts(self) -> dict[str, Any]:
        return asdict(self)


def _check(
    component: str, output: str | None, fixes: tuple[tuple[str, str], ...], backported: Callable[[str], bool]
) -> Check:
    required = max(fixes, key=lambda f: version_parse(f[0]))[0]  # type: ignore[arg-type, return-value]
    found = version_parse(output or "")
    if found is None:
        return Check(component, False, "", required, f"{component} did not report a version; {required}+ is required")
    missing = [cve for fix, cve in fixes if version_below(found, fix)]
    patched = [cve for cve in missing if backported(cve)]
    missing = [cve for cve in missing if cve not in patched]
    if missing:
        return Check(
            component,
            False,
            str(found),
            required,
            f"{component} {found} is below {required}: open to {', '.join(missing)}",
            missing,
        )
    note = f" (fix of {', '.join(patched)} backported by the distribution)" if patched else ""
    return Check(component, True, str(found), required, f"{component} {found}{note}")


def quota_check(*, method: str, problem: str) -> Check:
    """Judge the workspace quotas: `problem` is loopfs.probe's answer ("" when they work)."""
    required = "loop-mounted workspaces"
    if method == "none":
        return Check("workspace-quota", False, "none", required,
                     "workspace quotas are off (GPUCLOUD_WORKSPACE_QUOTA=none): one customer can fill "
                     "the data root's disk", blocking=False)  # fmt: skip
    if problem:
        return Check("workspace-quota", False, "", required,
                     f"workspace quotas do not work here ({problem}); fix that, or set "
                     "GPUCLOUD_WORKSPACE_QUOTA=none to take instances without them")  # fmt: skip
    return Check("workspace-quota", True, "loop", required, "workspace quotas: one loop-mounted ext4 per workspace")


def preflight_evaluate(
    *,
    runc_output: str | None,
    toolkit_output: str | None,
    needs_toolkit: bool,
    override: bool = False,
    runc_changelog: str = "",
    quota: Check | None = None,
) -> PreflightResult:
    """Judge the versions the tools reported (and `quota`, when given). Pure: no I/O.

    `runc_changelog` is the installed runc package's changelog (Debian's
    changelog.Debian.gz): a CVE counts as fixed below the upstream version only when
    that changelog's newest entry is for the version runc reports and the CVE is named.
    """

    def runc_backported(cve: str) -> bool:
        first = runc_changelog.splitlines()[0] if runc_changelog else ""
        package_version = re.match(r"^\S+ \(([^)]+)\)", first)
        return bool(package_version and package_version.group(1) in (runc_output or "") and cve in runc_changelog)

    checks = [_check("runc", runc_output, RUNC_FIXES, runc_backported)]
    if needs_toolkit:
        checks.insert(0, _check("nvidia-container-toolkit", toolkit_output, TOOLKIT_FIXES, lambda cve: False))
    if quota is not None:
        checks.append(quota)
    flagged = "; ".join(c.message for c in checks if not c.ok and not c.blocking)
    failing = "; ".join(c.message for c in checks if not c.ok and c.blocking)
    ok = not failing and not flagged
    if not failing:
        message = "Passed: " + "; ".join(c.message for c in checks if c.ok) + "."
        if not needs_toolkit:
            message += " Simulated GPUs only: no NVIDIA Container Toolkit needed."
        if flagged:
            message += f" Taking instances, but flagged: {flagged}."
    elif override:
        message = f"Overridden by GPUCLOUD_PREFLIGHT_OVERRIDE=1, taking instances although {failing}."
    else:
        message = (
            f"Refused: this host takes no instances because {failing}. Upgrade, then run "
            f"`manage.py sync_host` (or restart the worker); or {OVERRIDE_HINT}."
        )
    return PreflightResult(ok=ok, blocked=bool(failing) and not override, overridden=bool(failing) and override,
                           message=message, checks=checks)  # fmt: skip


def _run(argv: list[str]) -> str | None:
    """A tool's --version output, or None when it is not installed or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _changelog(package: str) -> str:
    path = Path("/usr/share/doc") / package / "changelog.Debian.gz"
    try:
        with gzip.open(path, "rt", errors="replace") as handle:
            return handle.read(200_000)
    except OSError:
        return ""


@dataclass
class Probe:
    """What this machine's tools report (the inputs of preflight_evaluate)."""

    runc_output: str | None
    toolkit_output: str | None
    runc_changelog: str
    quota_problem: str | None = None  # loopfs.probe's answer; None: not probed
    writable_layer: str = ""


def preflight_probe(*, engine_info: Callable[[], dict[str, Any]] | None = None) -> Probe:
    """Ask the tools on this machine; the engine's `docker info` when runc is not on PATH."""
    runc = _run(["runc", "--version"])
    if runc is None and engine_info is not None:
        try:
            commit = (engine_info().get("RuncCommit") or {}).get("ID") or ""
        except Exception:  # the engine not answering is a failed check, not a crash
            commit = ""
        runc = f"runc version {commit}" if commit else None
    toolkit = _run(["nvidia-ctk", "--version"]) or _run(["nvidia-container-toolkit", "--version"])
    return Probe(runc_output=runc, toolkit_output=toolkit, runc_changelog=_changelog("runc"))


def storage_probe(*, probe: Probe, docker_url: str) -> Probe:
    """Fill in the quota and writable-layer findings of `probe` on this machine."""
    if probe.quota_problem is None and settings.GPUCLOUD_WORKSPACE_QUOTA == "loop":
        probe.quota_problem = loopfs.probe(root=Path(settings.GPUCLOUD_DATA_ROOT))
    if not probe.writable_layer:
        try:
            probe.writable_layer = get_runtime(base_url=docker_url).writable_layer_bound()[1]
        except Exception:  # the engine not answering is reported, not a crash
            probe.writable_layer = "unknown (the container engine did not answer)"
    return probe


def host_preflight(*, host: Host, probe: Probe | None = None, override: bool | None = None) -> PreflightResult:
    """Check `host`'s runc (and toolkit, if it has real GPUs) and record the result in
    `host.facts["preflight"]`; a failing host is skipped by the scheduler from then on.

    Run by the host's worker (sync_host, worker start, periodically): the tools probed
    are this machine's. Never raises for a missing tool: that is a failed check.
    """
    if probe is None:

        def engine_info() -> dict[str, Any]:
            return get_runtime(base_url=host.docker_url).engine_info()

        probe = preflight_probe(engine_info=engine_info)
    probe = storage_probe(probe=probe, docker_url=host.docker_url)
    override = settings.GPUCLOUD_PREFLIGHT_OVERRIDE if override is None else override
    result = preflight_evaluate(
        runc_output=probe.runc_output,
        toolkit_output=probe.toolkit_output,
        needs_toolkit=host.gpus.filter(simulated=False).exists(),
        override=override,
        runc_changelog=probe.runc_changelog,
        quota=quota_check(method=settings.GPUCLOUD_WORKSPACE_QUOTA, problem=probe.quota_problem or ""),
    )
    result.checked_at = timezone.now().isoformat()
    result.writable_layer = probe.writable_layer
    if probe.writable_layer:
        result.message += f" Container writable layer: {probe.writable_layer}."
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        locked.facts = {**locked.facts, "preflight": result.as_facts()}
        locked.save(update_fields=["facts"])
    host.facts = locked.facts
    log = logger.warning if not result.ok else logger.info
    log("host %s preflight: %s", host.name, result.message)
    return result
