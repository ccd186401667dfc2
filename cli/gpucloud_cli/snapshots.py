"""`gpucloud snapshot …`: copies of a stopped instance's /workspace in the server's
object store (billed per GB-month of their stored size), and restoring them."""

from __future__ import annotations

import time

import click

from gpucloud_cli.client import EXIT_FAILED, EXIT_TIMEOUT, Api, CliError
from gpucloud_cli.context import api, json_option
from gpucloud_cli.output import Progress, emit, table

COLUMNS = ["id", "name", "instance", "status", "size_bytes", "content_bytes", "created_at"]


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MB"


def _transfer(client: Api, path: str, *, what: str, done: set[str], timeout: float) -> dict:
    """Poll a snapshot or a restore at `path` until its status is in `done` or `failed`,
    with a progress line (bytes done / total)."""
    progress = Progress()
    started = time.monotonic()
    item = client.get(path)
    while item is not None and item["status"] not in done | {"failed"}:
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            progress.done()
            raise CliError(f"timed out after {timeout:.0f} s: {what} is {item['status']}", exit_code=EXIT_TIMEOUT)
        total = item.get("total_bytes")
        moved = f"{_mb(item.get('done_bytes'))} of {_mb(total)}" if total else _mb(item.get("done_bytes"))
        progress.show(f"{what} {item['status']:<10} {elapsed:5.0f} s  {moved}"[:120])
        time.sleep(1)
        item = client.get(path)
    progress.done()
    if item is None:
        raise CliError(f"{what}: nothing to wait for", exit_code=EXIT_FAILED)
    if item["status"] == "failed":
        raise CliError(f"{what} failed: {item.get('error') or 'see `gpucloud events`'}", exit_code=EXIT_FAILED)
    return item


@click.group()
def snapshot() -> None:
    """Snapshots of a stopped instance's /workspace: take, list, restore, delete."""


@snapshot.command(name="ls")
@click.option("--instance", "instance_id", help="Only the snapshots of this instance.")
@json_option
@click.pass_context
def ls_(ctx: click.Context, instance_id: str | None, as_json: bool) -> None:
    """My snapshots (size_bytes: what is stored and billed; content_bytes: what a restore needs)."""
    rows = api(ctx).pages("/api/gpu/snapshots")
    if instance_id:
        rows = [row for row in rows if row["instance"] == instance_id]
    emit(rows, as_json, lambda: table(rows, COLUMNS))


@snapshot.command()
@click.argument("instance_id")
@click.option("--name", "-n", default="", help="A name of yours.")
@click.option("--wait", "-w", is_flag=True, help="Wait until it is stored, with a progress line.")
@click.option("--timeout", type=float, default=3600, show_default=True)
@json_option
@click.pass_context
def take(ctx: click.Context, instance_id: str, name: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Snapshot a stopped instance's /workspace."""
    client = api(ctx)
    taken = client.post(f"/api/gpu/instances/{instance_id}/snapshot", {"name": name})
    if wait:
        taken = _transfer(
            client, f"/api/gpu/snapshots/{taken['id']}", what=taken["id"], done={"ready"}, timeout=timeout
        )
    emit(taken, as_json, lambda: click.echo(f"{taken['id']} {taken['status']} {_mb(taken.get('size_bytes'))}"))


@snapshot.command()
@click.argument("instance_id")
@click.argument("snapshot_id")
@click.option("--wait", "-w", is_flag=True, help="Wait until it is restored, with a progress line.")
@click.option("--timeout", type=float, default=3600, show_default=True)
@json_option
@click.pass_context
def restore(ctx: click.Context, instance_id: str, snapshot_id: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Replace a stopped instance's /workspace with a snapshot (to start a new instance
    from one: `gpucloud launch --snapshot ID`)."""
    client = api(ctx)
    path = f"/api/gpu/instances/{instance_id}/restore"
    restored = client.post(path, {"snapshot": snapshot_id})
    if wait:
        restored = _transfer(client, path, what=f"restore into {instance_id}", done={"done"}, timeout=timeout)
    emit(restored, as_json, lambda: click.echo(f"{instance_id} restore {restored['status']}"))


@snapshot.command()
@click.argument("snapshot_id")
@click.pass_context
def rm(ctx: click.Context, snapshot_id: str) -> None:
    """Delete a snapshot (its billing stops now)."""
    api(ctx).delete(f"/api/gpu/snapshots/{snapshot_id}")
    click.echo(f"{snapshot_id} deleted")
