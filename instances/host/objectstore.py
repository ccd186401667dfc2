"""Where snapshots are kept: one interface, two backends.

- `LocalStore`: a directory (GPUCLOUD_SNAPSHOT_DIR, under the data root by default),
  the quick start's default. An object is written as `<key>.partial` and renamed when
  complete, so a half-written one is never found under its key.
- `S3Store`: an S3-compatible bucket through boto3 (the only module that imports it).
  Uploads are multipart from a stream (parts of GPUCLOUD_SNAPSHOT_S3_PART_MB, several
  in flight); a failed upload is aborted, so no half object is ever visible under its
  key, and the parts of an earlier failed try are aborted before the next one.
  Downloads are streamed.

Callers see only StoreUnavailable (the store could not be reached or refused: worth a
retry) and ObjectMissing; never botocore's exceptions. Keys and secrets are never
logged or put in an error's words.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from instances.errors import InfrastructureError, InstanceError

logger = logging.getLogger("instances.host.objectstore")
READ_BYTES = 4 * 2**20
FLUSH_BYTES = 64 * 2**20


class StoreUnavailable(InfrastructureError):
    code = "instances:store-unavailable"
    default_message = "The snapshot store is unreachable."


class ObjectMissing(InstanceError):
    code = "instances:snapshot-object-missing"
    default_message = "The snapshot's object is missing from the store."


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


class ObjectStore(Protocol):
    name: str

    def put(self, *, key: str, stream: Readable) -> int:
        """Store the stream's bytes under `key` (replacing it); the size stored."""

    def open(self, *, key: str) -> contextlib.AbstractContextManager[Iterator[bytes]]:
        """The object's bytes, in chunks, as they arrive."""

    def size(self, *, key: str) -> int | None:
        """The stored size, None when there is no such object."""

    def delete(self, *, key: str) -> None:
        """Remove the object (and any half-made upload of it); nothing when absent."""


class LocalStore:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreUnavailable("the object key escapes the store's directory")
        return path

    def put(self, *, key: str, stream: Readable) -> int:
        path = self._path(key)
        partial = path.with_name(path.name + ".partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as out:
                flusher: threading.Thread | None = None
                unflushed = 0
                while chunk := stream.read(READ_BYTES):
                    out.write(chunk)
                    unflushed += len(chunk)
                    # The object must be on disk before it is `ready`; writing it back as it
                    # comes (off this thread) leaves little for the last fsync to wait for.
                    if unflushed >= FLUSH_BYTES and (flusher is None or not flusher.is_alive()):
                        out.flush()
                        flusher = threading.Thread(target=os.fdatasync, args=(out.fileno(),), daemon=True)
                        flusher.start()
                        unflushed = 0
                out.flush()
                if flusher is not None:
                    flusher.join()
                os.fsync(out.fileno())
            partial.rename(path)
            return path.stat().st_size
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise StoreUnavailable(f"the snapshot could not be written: {exc.strerror or exc}") from exc

    @contextlib.contextmanager
    def open(self, *, key: str) -> Iterator[Iterator[bytes]]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as exc:
            raise ObjectMissing() from exc
        except OSError as exc:
            raise StoreUnavailable(f"the snapshot could not be read: {exc.strerror or exc}") from exc
        with handle:
            yield iter(lambda: handle.read(READ_BYTES), b"")

    def size(self, *, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.exists() else None

    def delete(self, *, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".partial").unlink(missing_ok=True)


class S3Store:
    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str = "",
        region: str = "",
        access_key: str = "",
        secret_key: str = "",
        part_bytes: int = 16 * 2**20,
        concurrency: int = 4,
    ) -> None:
        self.bucket = bucket
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=max(10, concurrency * 2),
                s3={"addressing_style": "path"},
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=part_bytes,
            multipart_chunksize=part_bytes,
            max_concurrency=concurrency,
            use_threads=True,
        )
        self._bucket_checked = False

    def _fail(self, action: str, exc: Exception) -> StoreUnavailable:
        # The error's class and S3's code only: never a key, a URL with credentials or a header.
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        return StoreUnavailable(f"the snapshot store failed to {action}: {type(exc).__name__} {code}".strip())

    def _bucket(self) -> None:
        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise self._fail("find its bucket", exc) from exc
            self.client.create_bucket(Bucket=self.bucket)
        self._bucket_checked = True

    def _abort_uploads(self, key: str) -> None:
        """Abort the multipart uploads of `key` left by a failed try (their parts cost space)."""
        found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        for upload in found.get("Uploads", []):
            if upload.get("Key") == key:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])

    def put(self, *, key: str, stream: Readable) -> int:
        try:
            self._bucket()
            self._abort_uploads(key)
            self.client.upload_fileobj(stream, self.bucket, key, Config=self.transfer)
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except (BotoCoreError, ClientError) as exc:
            # s3transfer aborts its multipart upload on failure when the store still
            # answers; when it does not, the next try's _abort_uploads does.
            raise self._fail("store the snapshot", exc) from exc

    @contextlib.contextmanager
    def open(self, *, key: str) -> Iterator[Iterator[bytes]]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectMissing() from exc
            raise self._fail("read the snapshot", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read the snapshot", exc) from exc
        try:
            yield self._chunks(body)
        finally:
            body.close()

    def _chunks(self, body: object) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(READ_BYTES)  # type: ignore[attr-defined]  # botocore StreamingBody
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._fail("read the snapshot", exc) from exc

    def size(self, *, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail("find the snapshot", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("find the snapshot", exc) from exc

    def delete(self, *, key: str) -> None:
        try:
            self._abort_uploads(key)
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchBucket", "404"):
                return
            raise self._fail("delete the snapshot", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("delete the snapshot", exc) from exc


def store_for(name: str) -> ObjectStore:
    """The backend `name` ("local" or "s3") as this process's settings configure it."""
    if name == LocalStore.name:
        return LocalStore(Path(settings.GPUCLOUD_SNAPSHOT_DIR))
    if name == S3Store.name:
        return S3Store(
            bucket=settings.GPUCLOUD_SNAPSHOT_S3_BUCKET,
            endpoint=settings.GPUCLOUD_SNAPSHOT_S3_ENDPOINT,
            region=settings.GPUCLOUD_SNAPSHOT_S3_REGION,
            access_key=settings.GPUCLOUD_SNAPSHOT_S3_ACCESS_KEY,
            secret_key=settings.GPUCLOUD_SNAPSHOT_S3_SECRET_KEY,
            part_bytes=settings.GPUCLOUD_SNAPSHOT_S3_PART_MB * 2**20,
            concurrency=settings.GPUCLOUD_SNAPSHOT_S3_CONCURRENCY,
        )
    raise StoreUnavailable(f"no snapshot store named {name!r} is configured")
