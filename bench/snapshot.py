"""Snapshot and restore throughput beside a plain `tar | zstd` pipeline, same store.

Makes a 1 GB workspace of mixed files (a third incompressible, a third text-like, the
rest thousands of small files), then, for each store:
- snapshot: instances.host.archive.pack (tar | zstd -3 -T0, SHA-256 on the fly) into
  the store's put (instances.host.objectstore), as the worker does;
- plain: `tar -cf - . | zstd -3 -T0` into the same store (a file for the local store; the
  same boto3 multipart upload for S3), no hashing;
- restore: the store's object through instances.host.archive.unpack (SHA-256 on the
  fly) into an empty directory; plain restore: `zstd -d | tar -x` of the same object.
MB/s is the workspace's bytes over the wall time; the ratio snapshot / plain is the goal
(≥ 0.8). Printed, never asserted.

    .venv/bin/python bench/snapshot.py [--size-mb 1024] [--s3] [--part-mb 16] [--concurrency 4]

--s3 starts SeaweedFS on 127.0.0.1:31950-31957 (tests.objectstore) for the run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpucloud.settings")
os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

django.setup()

from instances.host.archive import pack, unpack  # noqa: E402
from instances.host.objectstore import LocalStore, ObjectStore, S3Store  # noqa: E402

MB = 2**20


def make_workspace(root: Path, size_mb: int) -> int:
    """A third random bytes (big files), a third text-like lines, a third small files."""
    rng = random.Random(14)
    third = size_mb * MB // 3
    (root / "models").mkdir(parents=True)
    for i in range(4):
        with open(root / "models" / f"weights-{i}.bin", "wb") as out:
            for _ in range(third // 4 // MB):
                out.write(os.urandom(MB))
    (root / "logs").mkdir()
    words = [f"{w}{i}" for i, w in enumerate(["loss", "epoch", "step", "lr", "grad", "token", "batch"] * 40)]
    line_block = "\n".join(" ".join(rng.choices(words, k=12)) for _ in range(4000)).encode()
    with open(root / "logs" / "train.log", "wb") as out:
        for _ in range(third // len(line_block)):
            out.write(line_block)
    written = 0
    for i in range(third // (48 * 1024)):
        folder = root / "src" / f"pkg{i // 500}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(4, 92) * 1024
        chunk = (line_block[:size] if i % 2 else os.urandom(size // 4) * 4)[:size]
        (folder / f"file{i}.py").write_bytes(chunk)
        written += len(chunk)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def plain_put(store: ObjectStore, key: str, source: Path, durable: bool = False) -> None:
    tar = subprocess.Popen(["tar", "-C", str(source), "-cf", "-", "."], stdout=subprocess.PIPE)
    zstd = subprocess.Popen(["zstd", "-q", "-3", "-T0", "-c"], stdin=tar.stdout, stdout=subprocess.PIPE)
    tar.stdout.close()  # type: ignore[union-attr]
    if isinstance(store, S3Store):
        store.client.upload_fileobj(zstd.stdout, store.bucket, key, Config=store.transfer)
    else:
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            shutil.copyfileobj(zstd.stdout, out, 4 * MB)  # type: ignore[misc]
            if durable:  # what the local store does before a snapshot is `ready`
                out.flush()
                os.fsync(out.fileno())
    zstd.wait()
    tar.wait()


def plain_get(store: ObjectStore, key: str, target: Path) -> None:
    zstd = subprocess.Popen(["zstd", "-d", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    tar = subprocess.Popen(["tar", "-C", str(target), "-xf", "-"], stdin=zstd.stdout)
    zstd.stdout.close()  # type: ignore[union-attr]
    if isinstance(store, S3Store):
        body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(4 * MB):
            zstd.stdin.write(chunk)  # type: ignore[union-attr]
    else:
        with open(store.root / key, "rb") as handle:
            shutil.copyfileobj(handle, zstd.stdin, 4 * MB)  # type: ignore[misc]
    zstd.stdin.close()  # type: ignore[union-attr]
    zstd.wait()
    tar.wait()


def ours_put(store: ObjectStore, key: str, source: Path) -> None:
    with pack(source=source, level=3) as stream:
        store.put(key=key, stream=stream)


def ours_get(store: ObjectStore, key: str, target: Path) -> None:
    with store.open(key=key) as chunks, unpack(target=target) as sink:
        for chunk in chunks:
            sink.write(chunk)


def run(name: str, store: ObjectStore, source: Path, scratch: Path, size: int, rounds: int) -> None:
    def fresh() -> Path:
        target = scratch / "restore"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        return target

    results: dict[str, list[float]] = {"snapshot": [], "plain snapshot": [], "restore": [], "plain restore": []}
    local = isinstance(store, LocalStore)
    if local:
        results["plain + fsync"] = []
    for _ in range(rounds):  # interleaved, so a busy moment hurts both
        results["plain snapshot"].append(timed(partial(plain_put, store, "bench/plain.tar.zst", source)))
        if local:
            results["plain + fsync"].append(timed(partial(plain_put, store, "bench/plain.tar.zst", source, True)))
        results["snapshot"].append(timed(partial(ours_put, store, "bench/ours.tar.zst", source)))
        results["plain restore"].append(timed(partial(plain_get, store, "bench/plain.tar.zst", fresh())))
        results["restore"].append(timed(partial(ours_get, store, "bench/ours.tar.zst", fresh())))
    best = {k: min(v) for k, v in results.items()}
    mbps = {k: size / MB / v for k, v in best.items()}
    print(f"\n[{name}] workspace {size / MB:.0f} MB, best of {rounds}")
    for label in results:
        print(f"  {label:<15} {mbps[label]:8.1f} MB/s  ({best[label]:.2f} s)")
    print(f"  snapshot / plain: {mbps['snapshot'] / mbps['plain snapshot']:.2f}   (goal ≥ 0.8)")
    if local:
        print(f"  snapshot / plain + fsync: {mbps['snapshot'] / mbps['plain + fsync']:.2f}")
    print(f"  restore  / plain: {mbps['restore'] / mbps['plain restore']:.2f}   (goal ≥ 0.8)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--s3", action="store_true", help="also against SeaweedFS on 127.0.0.1:31950")
    parser.add_argument("--part-mb", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    base = Path(os.environ.get("GPUCLOUD_VAR_DIR", ROOT / "var")) / "bench-snapshot"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    scratch = Path(tempfile.mkdtemp(dir=base))
    source = base / "workspace"
    size = make_workspace(source, args.size_mb)
    print(f"cores: {os.cpu_count()}, zstd level 3, -T0; parts {args.part_mb} MB x {args.concurrency}")
    try:
        run("local directory", LocalStore(base / "store"), source, scratch, size, args.rounds)
        if args.s3:
            from tests.objectstore import ACCESS_KEY, ENDPOINT, SECRET_KEY, SeaweedServer  # the tests' server

            server = SeaweedServer(base / "seaweedfs")
            server.start()
            try:
                store = S3Store(
                    bucket="bench-snapshots", endpoint=ENDPOINT, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                    part_bytes=args.part_mb * MB, concurrency=args.concurrency,
                )  # fmt: skip
                store.client.create_bucket(Bucket="bench-snapshots")
                run("S3 (SeaweedFS)", store, source, scratch, size, args.rounds)
            finally:
                server.remove()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
