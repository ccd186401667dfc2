"""Snapshots of workspaces: where they are stored (a local directory or an S3-compatible
bucket), how they are compressed, and how long one may take."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from gpucloud.env import env, env_int
from gpucloud.settings.hosts import GPUCLOUD_DATA_ROOT

# Snapshots (instances/host/objectstore.py): "local" keeps them in GPUCLOUD_SNAPSHOT_DIR
# (the quick start), "s3" in an S3-compatible bucket. The keys are never logged.
GPUCLOUD_SNAPSHOT_STORE = env("GPUCLOUD_SNAPSHOT_STORE", "local")
if GPUCLOUD_SNAPSHOT_STORE not in ("local", "s3"):
    raise ImproperlyConfigured("GPUCLOUD_SNAPSHOT_STORE must be 'local' or 's3'")
GPUCLOUD_SNAPSHOT_DIR = Path(env("GPUCLOUD_SNAPSHOT_DIR", str(GPUCLOUD_DATA_ROOT / "snapshots")))
GPUCLOUD_SNAPSHOT_S3_ENDPOINT = env("GPUCLOUD_SNAPSHOT_S3_ENDPOINT", "")  # empty: AWS
GPUCLOUD_SNAPSHOT_S3_BUCKET = env("GPUCLOUD_SNAPSHOT_S3_BUCKET", "gpucloud-snapshots")
GPUCLOUD_SNAPSHOT_S3_REGION = env("GPUCLOUD_SNAPSHOT_S3_REGION", "us-east-1")
GPUCLOUD_SNAPSHOT_S3_ACCESS_KEY = env("GPUCLOUD_SNAPSHOT_S3_ACCESS_KEY", "")
GPUCLOUD_SNAPSHOT_S3_SECRET_KEY = env("GPUCLOUD_SNAPSHOT_S3_SECRET_KEY", "")
GPUCLOUD_SNAPSHOT_S3_PART_MB = env_int("GPUCLOUD_SNAPSHOT_S3_PART_MB", 16)
GPUCLOUD_SNAPSHOT_S3_CONCURRENCY = env_int("GPUCLOUD_SNAPSHOT_S3_CONCURRENCY", 4)
GPUCLOUD_SNAPSHOT_ZSTD_LEVEL = env_int("GPUCLOUD_SNAPSHOT_ZSTD_LEVEL", 3)
# How long one snapshot or restore into a stopped instance may run (its task's soft time
# limit); keep it under the broker's visibility timeout (3600 s).
GPUCLOUD_SNAPSHOT_TIME_LIMIT_SECONDS = env_int("GPUCLOUD_SNAPSHOT_TIME_LIMIT_SECONDS", 3000)
