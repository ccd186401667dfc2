"""Workspace archives: a directory as a tar stream compressed with zstd and checksummed
on the fly (SHA-256 of the compressed bytes, which is what the store holds), and back.

GNU tar and the zstd binary do the work in their own processes, joined by a kernel pipe:
zstd compresses on every core (`-T0`) at level 3, and Python only sees the compressed
bytes, in large chunks, to hash and hand to the store. Nothing is ever held whole in
memory or copied to a temporary file. Progress of a pack is tar's own checkpoints (one
per 100 records of 10 KiB, numbered in records) read from its stderr; of an unpack, the compressed bytes fed.

Nothing here imports Django; every failure is ArchiveError with the tool's own words.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

CHUNK_BYTES = 4 * 2**20
TAR_RECORD_BYTES = 10240  # tar's default blocking factor (20) times 512
_CHECKPOINT_RECORDS = 100
_LAST_NUMBER = re.compile(rb"(\d+)\s*$")
_TOTAL = re.compile(rb"^Total bytes written: (\d+)")

PIPE_BYTES = 4 * 2**20
Progress = Callable[[int], None]


def _widen(pipe: IO[bytes] | None) -> None:
    """Give a pipe room for a whole chunk (Linux: 64 KiB by default). With the default,
    a tool blocks on the full pipe while Python hashes the chunk before, so hashing time
    adds to the tools' instead of overlapping it."""
    if pipe is None:
        return
    for size in (PIPE_BYTES, 2**20):  # above /proc/sys/fs/pipe-max-size needs CAP_SYS_RESOURCE
        try:
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, size)
            return
        except OSError:
            continue


class ArchiveError(Exception):
    """tar or zstd failed (unreadable files, a corrupt stream, a full target)."""


def _tool_words(name: str, proc: subprocess.Popen, stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip() and not ln.startswith("tar: ")]
    lines = lines or stderr.decode(errors="replace").strip().splitlines()
    return f"{name} failed (exit {proc.returncode}): {lines[-1] if lines else 'no message'}"


class PackStream:
    """The compressed archive as a readable stream; `sha256` and `bytes_read` grow as it is read."""

    def __init__(self, zstd: subprocess.Popen) -> None:
        self._out: IO[bytes] = zstd.stdout  # type: ignore[assignment]  # stdout=PIPE
        self._hash = hashlib.sha256()
        self.bytes_read = 0
        self.content_bytes = 0  # the tar stream's length, known once tar is done

    def read(self, size: int = -1) -> bytes:
        # A pipe's read returns what is there; the store wants full parts, so fill them.
        want = CHUNK_BYTES if size is None or size < 0 else size
        data = self._out.read(want)
        self._hash.update(data)  # releases the GIL for large buffers
        self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@contextlib.contextmanager
def pack(
    *, source: Path, level: int = 3, threads: int = 0, on_progress: Progress | None = None
) -> Iterator[PackStream]:
    """Archive `source` (its contents, owners and modes kept) as a zstd stream.

    Read the yielded stream to its end inside the block; on leaving it, the tools are
    waited for and ArchiveError is raised when either failed (the stream read so far is
    then not a complete archive). `on_progress(tar_bytes)` is called from a thread.
    """
    tar = subprocess.Popen(
        [
            "tar",
            "-C",
            str(source),
            "--numeric-owner",
            "--sparse",
            f"--checkpoint={_CHECKPOINT_RECORDS}",
            "--checkpoint-action=echo=%u",
            "--totals",
            "-cf",
            "-",
            ".",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    zstd = subprocess.Popen(
        ["zstd", "-q", f"-{level}", f"-T{threads}", "-c"],
        stdin=tar.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=CHUNK_BYTES,
    )
    _widen(tar.stdout)
    _widen(zstd.stdout)
    tar.stdout.close()  # type: ignore[union-attr]  # zstd holds the pipe now: tar sees SIGPIPE if zstd dies
    tar_errors: list[bytes] = []
    stream = PackStream(zstd)
    watcher = threading.Thread(target=_watch_tar, args=(tar.stderr, tar_errors, on_progress, stream), daemon=True)
    watcher.start()
    ok = False
    try:
        yield stream
        ok = True
    finally:
        if not ok:
            for proc in (tar, zstd):
                proc.kill()
        zstd_err = zstd.stderr.read() if zstd.stderr else b""
        zstd.wait()
        tar.wait()
        watcher.join(timeout=10)
        for stream_ in (zstd.stdout, zstd.stderr):
            if stream_ is not None:
                stream_.close()
    # GNU tar exits 1 when a file changed while it was read: still a valid archive.
    if tar.returncode not in (0, 1):
        raise ArchiveError(_tool_words("tar", tar, b"".join(tar_errors)))
    if zstd.returncode != 0:
        raise ArchiveError(_tool_words("zstd", zstd, zstd_err))


def _watch_tar(stderr: IO[bytes], errors: list[bytes], on_progress: Progress | None, stream: PackStream) -> None:
    for line in stderr:
        total = _TOTAL.match(line)
        if total:
            stream.content_bytes = int(total.group(1))
            continue
        found = _LAST_NUMBER.search(line) if line.startswith(b"tar: ") else None
        if found and on_progress is not None:
            on_progress(int(found.group(1)) * TAR_RECORD_BYTES)  # %u counts records
        elif not found:
            errors.append(line)


class UnpackSink:
    """Where the compressed archive is written; `sha256` and `bytes_written` grow as it is."""

    def __init__(self, zstd: subprocess.Popen) -> None:
        self._in: IO[bytes] = zstd.stdin  # type: ignore[assignment]  # stdin=PIPE
        self._hash = hashlib.sha256()
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.bytes_written += len(data)
        try:
            self._in.write(data)
        except BrokenPipeError as exc:  # zstd or tar gave up: the reason comes on leaving
            raise ArchiveError("the archive could not be unpacked") from exc
        return len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@contextlib.contextmanager
def unpack(*, target: Path) -> Iterator[UnpackSink]:
    """Unpack the zstd archive written to the yielded sink into `target` (which should be
    fresh and empty: a failure leaves whatever was unpacked so far for the caller to
    discard). Raises ArchiveError on leaving when zstd or tar failed."""
    zstd = subprocess.Popen(
        ["zstd", "-d", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    tar = subprocess.Popen(
        ["tar", "-C", str(target), "--numeric-owner", "--same-owner", "-p", "-xf", "-"],
        stdin=zstd.stdout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _widen(zstd.stdin)
    _widen(zstd.stdout)
    zstd.stdout.close()  # type: ignore[union-attr]  # tar holds the pipe now
    # Both stderrs are drained by threads: a chatty tool must never block on a full pipe.
    errs: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda n=n, p=p: errs.__setitem__(n, p.stderr.read()), daemon=True)
        for n, p in (("zstd", zstd), ("tar", tar))
    ]
    for reader in readers:
        reader.start()
    sink = UnpackSink(zstd)
    ok = False
    try:
        yield sink
        ok = True
    finally:
        if not ok:
            for proc in (zstd, tar):
                proc.kill()
        with contextlib.suppress(BrokenPipeError):
            zstd.stdin.close()  # type: ignore[union-attr]
        zstd.wait()
        tar.wait()
        for reader in readers:
            reader.join(timeout=10)
    if zstd.returncode != 0:
        raise ArchiveError(_tool_words("zstd", zstd, errs.get("zstd", b"")))
    if tar.returncode != 0:
        raise ArchiveError(_tool_words("tar", tar, errs.get("tar", b"")))
