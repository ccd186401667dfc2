"""Per-instance workspace directories on the host, bind-mounted at /workspace.

Paths are built from database ids only (the owner's numeric id and the instance's
generated public id), never from anything a customer typed, and are checked to stay
under GPUCLOUD_DATA_ROOT before anything is created or removed.

With GPUCLOUD_WORKSPACE_QUOTA=loop (the default) the workspace is a loop-mounted
filesystem of storage_gb (instances.host.loopfs), mounted while the instance has a
container (ensure) and unmounted when it goes (release), so a stopped instance holds
no loop device and a restarted host mounts again on the next start. With `none` it is a
plain directory bounded by nothing but the data root's disk (the preflight flags it).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from instances.errors import RuntimeFailure
from instances.host import loopfs
from instances.models import Instance

logger = logging.getLogger("instances.host.workspaces")
IMAGE_NAME = "workspace.ext4"

_PUBLIC_ID = re.compile(r"^inst_[a-z0-9]+$")


def instance_dir(*, instance: Instance) -> Path:
    """`<root>/users/<owner id>/<public id>`: holds the workspace and nothing else."""
    if not _PUBLIC_ID.match(instance.public_id):
        raise RuntimeFailure("the instance id is not a valid directory name")
    root = Path(settings.GPUCLOUD_DATA_ROOT).resolve()
    path = (root / "users" / str(int(instance.owner_id)) / instance.public_id).resolve()
    if root not in path.parents:
        raise RuntimeFailure("the workspace path escapes the data root")
    return path


def workspace_path(*, instance: Instance) -> Path:
    return instance_dir(instance=instance) / "workspace"


def image_path(*, instance: Instance) -> Path:
    return instance_dir(instance=instance) / IMAGE_NAME


def quota_enforced() -> bool:
    return settings.GPUCLOUD_WORKSPACE_QUOTA == "loop"


def workspace_ensure(*, instance: Instance) -> Path:
    """Create the workspace if missing and, with loop quotas, mount it at storage_gb
    (grown first when the instance was resized). Idempotent. Raises RuntimeFailure when
    it cannot, or when its disk has less than GPUCLOUD_WORKSPACE_MIN_FREE_MB free."""
    path = workspace_path(instance=instance)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # The container's root owns what it writes here, setuid-root files included (a
        # bind mount cannot be nosuid): the host's other users must not reach them.
        path.parent.chmod(0o700)
        free_mb = shutil.disk_usage(path).free // 2**20
    except OSError as exc:
        raise RuntimeFailure(f"the workspace could not be created: {exc.strerror or exc}") from exc
    # A full disk lets mkdir succeed (directories cost no blocks on some filesystems) and
    # then fails the customer's first write: refuse before a container is made.
    if free_mb < settings.GPUCLOUD_WORKSPACE_MIN_FREE_MB:
        raise RuntimeFailure(f"the workspace disk is full ({free_mb} MB free)")
    if quota_enforced():
        _mount(instance=instance, path=path)
    try:
        path.chmod(0o755)  # the mounted filesystem's root, or the plain directory
    except OSError as exc:
        raise RuntimeFailure(f"the workspace could not be prepared: {exc.strerror or exc}") from exc
    return path


def _mount(*, instance: Instance, path: Path) -> None:
    if loopfs.is_mounted(mountpoint=path):
        return
    image = image_path(instance=instance)
    size_bytes = int(instance.storage_gb) * 2**30
    if not image.exists():
        if any(path.iterdir()):
            # A workspace made before quotas: mounting over it would hide the customer's
            # files. It stays a plain directory until it is snapshotted and restored.
            logger.warning("workspace of %s predates quotas: left unbounded", instance.public_id)
            return
        loopfs.image_create(image=image, size_bytes=size_bytes)
    else:
        loopfs.image_grow(image=image, size_bytes=size_bytes)
    loopfs.mount(image=image, mountpoint=path)


def workspace_release(*, instance: Instance) -> bool:
    """Unmount the workspace once its container is gone (frees its loop device); the
    files stay in the image. True when it was mounted. Never raises: a busy one is
    logged and left for workspace_unmount_idle."""
    try:
        return loopfs.unmount(mountpoint=workspace_path(instance=instance))
    except RuntimeFailure as exc:
        logger.warning("workspace of %s stays mounted: %s", instance.public_id, exc.message)
        return False


def workspace_usage(*, instance: Instance) -> loopfs.Usage | None:
    """Used / size of a mounted workspace; None when it is not mounted (or has no quota)."""
    path = workspace_path(instance=instance)
    if not loopfs.is_mounted(mountpoint=path):
        return None
    return loopfs.usage(mountpoint=path)


@contextlib.contextmanager
def workspace_open(*, instance: Instance) -> Iterator[Path]:
    """The workspace's files on the host, mounted for the duration when it is not
    (a stopped instance's); left as it was afterwards."""
    path = workspace_path(instance=instance)
    image = image_path(instance=instance)
    if loopfs.is_mounted(mountpoint=path) or not image.exists():
        yield path
        return
    loopfs.mount(image=image, mountpoint=path)
    try:
        yield path
    finally:
        loopfs.unmount(mountpoint=path)


def workspace_mounts() -> dict[str, Path]:
    """The mounted workspaces under the data root, by public id."""
    root = Path(settings.GPUCLOUD_DATA_ROOT)
    return {p.parent.name: p for p in loopfs.mounts_under(root=root / "users") if p.name == "workspace"}


def workspace_remove(*, instance: Instance) -> bool:
    """Delete the instance's directory; True when something was removed."""
    path = instance_dir(instance=instance)
    if not path.exists():
        return False
    # Raises when still busy: the files must not be deleted under a live mount.
    loopfs.unmount(mountpoint=workspace_path(instance=instance))
    shutil.rmtree(path)
    return True


@contextlib.contextmanager
def workspace_fresh(*, instance: Instance) -> Iterator[Path]:
    """An empty workspace beside the instance's own, to restore a snapshot into.

    Yields its files' directory; leaving the block normally swaps it in place of the
    instance's workspace (one rename: the old files go only then), leaving by an
    exception discards it and leaves the workspace as it was. The workspace must not
    be mounted (no container). With loop quotas it is a new image of storage_gb.
    """
    base = instance_dir(instance=instance)
    path = workspace_path(instance=instance)
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o700)
    if loopfs.is_mounted(mountpoint=path):
        loopfs.unmount(mountpoint=path)  # raises while a container still uses it
    fresh_image, fresh = base / "restore.ext4", base / "restore"
    _discard(image=fresh_image, files=fresh)
    try:
        if quota_enforced():
            loopfs.image_create(image=fresh_image, size_bytes=int(instance.storage_gb) * 2**30)
            loopfs.mount(image=fresh_image, mountpoint=fresh)
        else:
            fresh.mkdir()
        fresh.chmod(0o755)
        yield fresh
    except BaseException:
        _discard(image=fresh_image, files=fresh)
        raise
    if quota_enforced():
        loopfs.unmount(mountpoint=fresh)
        fresh_image.rename(image_path(instance=instance))  # atomic: old image or new, never half
        fresh.rmdir()
        path.mkdir(exist_ok=True)
        return
    old = base / "workspace.old"
    if path.exists():
        path.rename(old)
    fresh.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _discard(*, image: Path, files: Path) -> None:
    try:
        if loopfs.is_mounted(mountpoint=files):
            loopfs.unmount(mountpoint=files)
    except RuntimeFailure as exc:
        logger.warning("restore target %s stays mounted: %s", files, exc.message)
        return
    image.unlink(missing_ok=True)
    image.with_suffix(".partial").unlink(missing_ok=True)
    shutil.rmtree(files, ignore_errors=True)
