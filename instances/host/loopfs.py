"""One loop-mounted ext4 filesystem per workspace: the size a customer chose is a hard limit.

The image is a sparse file (it costs only the blocks written), formatted ext4 with no
reserved blocks and mounted `nosuid,nodev` on the workspace directory, which the
container gets as a bind mount. A write past the size fails inside the container with
ENOSPC and touches nothing else on the host. `mount -o loop` sets the loop device's
autoclear flag, so an unmount also frees the loop device (there are few of them).

Kernel state outlives the worker: a mount stays after a worker restart and is gone
after a reboot. Callers therefore ask `is_mounted` and never remember it themselves.
Nothing here imports Django; errors are RuntimeFailure with the tool's own words.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from instances.errors import RuntimeFailure

TOOLS = ("mkfs.ext4", "e2fsck", "resize2fs", "mount", "umount")
_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Usage:
    used_bytes: int
    size_bytes: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used_bytes / self.size_bytes if self.size_bytes else 0.0


def _run(argv: list[str], *, action: str, ok_codes: tuple[int, ...] = (0,)) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeFailure(f"{action}: {exc}") from exc
    if done.returncode not in ok_codes:
        words = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeFailure(f"{action}: {words[-1] if words else f'exit {done.returncode}'}")


def image_create(*, image: Path, size_bytes: int) -> None:
    """Make a sparse image of `size_bytes` holding an empty ext4 (root-owned root)."""
    partial = image.with_suffix(".partial")
    with open(partial, "wb") as handle:
        handle.truncate(size_bytes)
    # No reserved blocks (the customer gets the whole size); lazy init keeps the sparse
    # file small, and `noinit_itable` at mount time stops the kernel from zeroing (and so
    # allocating) the inode tables in the background.
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
            str(partial),
        ],
        action="the workspace filesystem could not be made",
    )
    partial.rename(image)  # a half-made image is never mounted


def image_size(*, image: Path) -> int:
    return image.stat().st_size


def image_grow(*, image: Path, size_bytes: int) -> None:
    """Grow an unmounted image and its filesystem to `size_bytes` (never shrinks)."""
    if size_bytes <= image_size(image=image):
        return
    with open(image, "r+b") as handle:
        handle.truncate(size_bytes)
    # resize2fs refuses an offline resize of a filesystem not checked since its last mount.
    _run(["e2fsck", "-f", "-p", str(image)], action="the workspace check failed", ok_codes=(0, 1))
    _run(["resize2fs", str(image)], action="the workspace could not be grown")


def is_mounted(*, mountpoint: Path) -> bool:
    return os.path.ismount(mountpoint)


def mount(*, image: Path, mountpoint: Path) -> None:
    mountpoint.mkdir(parents=True, exist_ok=True)
    _run(
        ["mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noinit_itable", str(image), str(mountpoint)],
        action="the workspace could not be mounted",
    )


def unmount(*, mountpoint: Path) -> bool:
    """Unmount (the loop device goes with it); True when something was unmounted.

    Raises RuntimeFailure when the filesystem is busy (a container still uses it).
    """
    if not is_mounted(mountpoint=mountpoint):
        return False
    _run(["umount", str(mountpoint)], action="the workspace could not be unmounted")
    return True


def usage(*, mountpoint: Path) -> Usage:
    """Used and total bytes of the mounted filesystem."""
    stats = os.statvfs(mountpoint)
    size = stats.f_blocks * stats.f_frsize
    return Usage(used_bytes=size - stats.f_bfree * stats.f_frsize, size_bytes=size)


def mounts_under(*, root: Path) -> list[Path]:
    """Mountpoints below `root` (this process's view), deepest first."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            # Field 5 is the mountpoint, with spaces and such escaped as octal.
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def probe(*, root: Path) -> str:
    """Make, mount, fill past its size and remove a small image under `root`.

    Returns "" when quotas work here, else why not (in words for the operator).
    """
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (Debian: e2fsprogs, mount)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control is missing)"
    place = root / ".quota-probe"
    try:
        shutil.rmtree(place, ignore_errors=True)
        place.mkdir(parents=True)
        image, point = place / "probe.ext4", place / "mnt"
        image_create(image=image, size_bytes=16 * 2**20)
        mount(image=image, mountpoint=point)
        try:
            with open(point / "fill", "wb") as handle:
                handle.write(b"\0" * (32 * 2**20))
                handle.flush()
                os.fsync(handle.fileno())
            return "writing past the probe's size did not fail: the filesystem enforces nothing"
        except OSError:
            return ""  # ENOSPC, as promised
        finally:
            unmount(mountpoint=point)
    except (OSError, RuntimeFailure) as exc:
        return str(getattr(exc, "message", None) or exc)
    finally:
        for leftover in mounts_under(root=place):  # a probe interrupted mid-way
            subprocess.run(["umount", "-l", str(leftover)], capture_output=True, check=False)
        shutil.rmtree(place, ignore_errors=True)


def writable_layer_bound(info: dict) -> tuple[bool, str]:
    """From a Docker engine's `info`: whether `--storage-opt size=` bounds a container's
    writable layer, and in words what does."""
    driver = str(info.get("Driver") or "")
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
    # overlay2 takes it only on XFS mounted with pquota; these always do.
    if driver in ("btrfs", "zfs", "devicemapper", "windowsfilter") or (
        driver.startswith("overlay") and backing == "xfs"
    ):
        return True, f"bounded by --storage-opt size= ({driver} on {backing or driver})"
    return (
        False,
        f"unbounded by the engine ({driver} on {backing or 'unknown'} has no size option): "
        "only the free space of the engine's disk (Docker's data root) bounds it; keep that "
        "disk apart from the workspaces and the database",
    )
