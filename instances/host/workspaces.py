"""Per-instance workspace directories on the host, bind-mounted at /workspace.

Paths are built from database ids only (the owner's numeric id and the instance's
generated public id), never from anything a customer typed, and are checked to stay
under GPUCLOUD_DATA_ROOT before anything is created or removed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from django.conf import settings

from instances.errors import RuntimeFailure
from instances.models import Instance

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


def workspace_ensure(*, instance: Instance) -> Path:
    """Create the workspace if missing (idempotent). Raises RuntimeFailure when it cannot,
    or when its disk has less than GPUCLOUD_WORKSPACE_MIN_FREE_MB free."""
    path = workspace_path(instance=instance)
    try:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
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
    return path


def workspace_remove(*, instance: Instance) -> bool:
    """Delete the instance's directory; True when something was removed."""
    path = instance_dir(instance=instance)
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True
