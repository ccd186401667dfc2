"""`gpucloud`: the command group and the instance commands (launch, ls, show, stop/start/
restart/rm, logs, events, ssh, scp/rsync); account.py (login, the catalog, money) and
snapshots.py (`gpucloud snapshot …`) add theirs. Each calls the API through `client.Api`
and prints a table, or the API's JSON with `--json`. Errors exit with the codes of
`client` (EXIT_*)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gpucloud_cli import account, snapshots
from gpucloud_cli import ssh as sshmod
from gpucloud_cli.client import (
    DEFAULT_URL,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    Api,
    CliError,
)
from gpucloud_cli.context import api, json_option
from gpucloud_cli.output import Progress, emit, table

SETTLED = {"running", "stopped", "failed", "terminated"}


class Group(click.Group):
    """Reports a CliError in one line (`error: <code>: <message>`) with its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=Group)
@click.option(
    "--url", envvar="GPUCLOUD_URL", help="Server URL (default: the stored login's, else " + DEFAULT_URL + ")."
)
@click.version_option(package_name="gpucloud-cli")
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """Rent GPUs on a GPU Cloud server from the terminal."""
    ctx.obj = {"url": url}


# -- instances ---------------------------------------------------------------------------


def _key_refs(keys: tuple[str, ...]) -> list[str]:
    """--ssh-key values: a .pub file's key, or a saved key's id / fingerprint as given."""
    refs = []
    for key in keys:
        path = Path(key).expanduser()
        refs.append(path.read_text().strip() if path.is_file() else key)
    if not keys:
        default = sshmod.default_public_key()
        if default is not None:
            click.echo(f"Adding your key {default}", err=True)
            refs.append(default.read_text().strip())
    return refs


def wait_for(client: Api, instance: dict, *, statuses: set[str], timeout: float) -> dict:
    """Poll the instance until its status is in `statuses`, with a live progress line."""
    return _poll(client, instance, until=lambda i: i["status"] in statuses or i["status"] in SETTLED, timeout=timeout)


def _poll(client: Api, instance: dict, *, until: Callable[[dict], bool], timeout: float, doing: str = "") -> dict:
    progress = Progress()
    started = time.monotonic()
    path = f"/api/gpu/instances/{instance['id']}"
    while not until(instance):
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            progress.done()
            raise CliError(
                f"timed out after {timeout:.0f} s: {instance['id']} is {doing or instance['status']}",
                exit_code=EXIT_TIMEOUT,
            )
        events = client.get(f"{path}/events", limit=200).get("results", [])
        last = events[-1]["message"] if events else ""
        progress.show(f"{instance['id']} {doing or instance['status']:<13} {elapsed:5.0f} s  {last}"[:120])
        time.sleep(1)
        instance = client.get(path)
    progress.done()
    return instance


def _settled(client: Api, instance: dict, *, wanted: str, timeout: float, as_json: bool) -> None:
    instance = wait_for(client, instance, statuses={wanted}, timeout=timeout)
    if as_json:
        emit(instance, True, lambda: None)
    else:
        _show(instance)
    if instance["status"] != wanted:
        raise CliError(
            f"{instance['id']} is {instance['status']}: {instance.get('error') or 'see `gpucloud events`'}",
            exit_code=EXIT_FAILED,
        )


@cli.command()
@click.option("--template", "-t", required=True, help="Template slug (see `gpucloud templates`).")
@click.option("--gpu", "-g", required=True, help="GPU type SKU (see `gpucloud gpus`).")
@click.option("--storage", "-s", type=int, default=20, show_default=True, help="GB of /workspace.")
@click.option("--access", "-a", multiple=True, help="Access method (ssh, jupyter, ...); default: all.")
@click.option("--name", "-n", default="", help="A name of yours.")
@click.option("--ssh-key", "-k", multiple=True, help="A .pub file or a saved key's id; default: ~/.ssh/id_*.pub.")
@click.option("--env", "-e", multiple=True, help="KEY=VALUE for the container.")
@click.option("--no-password", is_flag=True, help="Keys only: no root password login.")
@click.option("--snapshot", "snapshot_id", metavar="ID", help="Start /workspace from this snapshot of yours.")
@click.option("--queue", "-q", is_flag=True, help="When no GPU of the type is free, wait in line for one.")
@click.option("--wait", "-w", is_flag=True, help="Wait until it runs, with a progress line.")
@click.option("--timeout", type=float, default=900, show_default=True, help="Seconds --wait waits.")
@json_option
@click.pass_context
def launch(ctx: click.Context, **opts: Any) -> None:
    """Launch an instance (202: it is provisioned in the background)."""
    client = api(ctx)
    env = {}
    for item in opts["env"]:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    body = {
        "template": opts["template"],
        "gpu": opts["gpu"],
        "storage": opts["storage"],
        "access": list(opts["access"]),
        "name": opts["name"],
        "ssh_keys": _key_refs(opts["ssh_key"]),
        "ssh_password_auth": not opts["no_password"],
        "env": env,
    }
    if opts["snapshot_id"]:
        body["snapshot"] = opts["snapshot_id"]
    path = "/api/gpu/instances?queue=1" if opts["queue"] else "/api/gpu/instances"
    instance = client.post(path, body, retry_key=True)
    if "queued" in instance:
        entry = instance["queued"]
        click.echo(
            f"No GPU free: {entry['id']} is number {entry['position']} in line for {entry['gpu_type']}", err=True
        )
        if not opts["wait"]:
            emit(entry, opts["as_json"], lambda: click.echo(entry["id"]))
            return
        instance = _await_grant(client, entry, timeout=opts["timeout"])
    if not opts["wait"]:
        emit(instance, opts["as_json"], lambda: _show(instance))
        return
    _settled(client, instance, wanted="running", timeout=opts["timeout"], as_json=opts["as_json"])


def _await_grant(client: Api, entry: dict, *, timeout: float) -> dict:
    """Poll a waitlist entry until it is granted; the instance it started as."""
    progress = Progress()
    started = time.monotonic()
    while entry["status"] == "waiting" or entry["status"] == "granting":
        if time.monotonic() - started > timeout:
            progress.done()
            raise CliError(f"timed out: {entry['id']} is still waiting", exit_code=EXIT_TIMEOUT)
        progress.show(f"{entry['id']} waiting, position {entry['position']}  {time.monotonic() - started:5.0f} s")
        time.sleep(2)
        entry = client.get(f"/api/gpu/waitlist/{entry['id']}")
    progress.done()
    if entry["status"] != "granted":
        raise CliError(f"{entry['id']} is {entry['status']}: {entry.get('reason') or ''}", exit_code=EXIT_FAILED)
    return client.get(f"/api/gpu/instances/{entry['instance']}")


@cli.command()
@click.option("--cancel", "cancel_id", metavar="ID", help="Leave the line: cancel this waiting entry.")
@json_option
@click.pass_context
def waitlist(ctx: click.Context, cancel_id: str | None, as_json: bool) -> None:
    """My launches waiting for a free GPU (and cancelling one)."""
    client = api(ctx)
    if cancel_id:
        entry = client.delete(f"/api/gpu/waitlist/{cancel_id}")
        emit(entry, as_json, lambda: click.echo(f"{entry['id']} {entry['status']}"))
        return
    rows = client.pages("/api/gpu/waitlist")
    emit(rows, as_json, lambda: table(rows, ["id", "status", "position", "gpu_type", "template", "instance"]))


@cli.command(name="ls")
@click.option("--status", help="Only instances in this status.")
@json_option
@click.pass_context
def ls_(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """My instances."""
    rows = api(ctx).pages("/api/gpu/instances", status=status)
    emit(rows, as_json, lambda: table(rows, ["id", "name", "status", "gpu_type", "template", "host", "created_at"]))


def _show(instance: dict) -> None:
    for key in ("id", "name", "status", "gpu", "template", "storage", "host", "created_at", "started_at", "error"):
        if instance.get(key) not in (None, ""):
            click.echo(f"{key:<11} {instance[key]}")
    if instance.get("note"):
        click.echo(f"{'note':<11} {instance['note']}")
    for method, value in (instance.get("access") or {}).items():
        if method in ("password", "token"):
            continue  # secrets only on request (`show --secrets`)
        click.echo(f"{method:<11} {value}")


@cli.command()
@click.argument("instance_id")
@click.option("--secrets", is_flag=True, help="Also print the root password and the access token.")
@json_option
@click.pass_context
def show(ctx: click.Context, instance_id: str, secrets: bool, as_json: bool) -> None:
    """One instance: status, access, cost."""
    instance = api(ctx).get(f"/api/gpu/instances/{instance_id}")
    if not secrets and not as_json:
        _show(instance)
    elif as_json:
        emit(instance, True, lambda: None)
    else:
        _show(instance)
        for key in ("password", "token"):
            if (instance.get("access") or {}).get(key):
                click.echo(f"{key:<11} {instance['access'][key]}")


def _lifecycle(action: str, wanted: str | None) -> click.Command:
    @click.argument("instance_id")
    @click.option("--wait", "-w", is_flag=True, help=f"Wait until it is {wanted}." if wanted else "Wait.")
    @click.option("--timeout", type=float, default=600, show_default=True)
    @json_option
    @click.pass_context
    def command(
        ctx: click.Context, instance_id: str, wait: bool, timeout: float, as_json: bool, move: bool = False
    ) -> None:
        client = api(ctx)
        path = f"/api/gpu/instances/{instance_id}"
        params = {"move": "1"} if move else None
        instance = client.delete(path) if action == "rm" else client.post(f"{path}/{action}", params=params)
        if wait and move:
            instance = _moved(client, instance, timeout=timeout)
        if wait:
            _settled(client, instance, wanted=wanted or "terminated", timeout=timeout, as_json=as_json)
        elif as_json:
            emit(instance, True, lambda: None)
        else:
            click.echo(f"{instance['id']} {instance['status']}")

    command.__doc__ = {
        "stop": "Stop: the GPU is released, /workspace kept (storage is billed).",
        "start": "Start a stopped instance (a free GPU of its type, possibly another one).",
        "restart": "Restart the container on the same GPU and ports.",
        "rm": "Destroy the instance and, after a grace period, its workspace.",
    }[action]
    if action == "start":
        command = click.option(
            "--move",
            is_flag=True,
            help="When its host cannot take it but another can, move its workspace there and start it there.",
        )(command)
    return click.command(name=action)(command)


def _moved(client: Api, instance: dict, *, timeout: float) -> dict:
    """Poll a moving instance (still `stopped`) until it starts on its new host or the
    move fails (its `error` says why). An unreachable old host shows it `unreachable`
    (and why) until it has moved."""

    def until(i: dict) -> bool:
        return i["status"] != "unreachable" and (i["status"] != "stopped" or bool(i.get("error")))

    return _poll(client, instance, until=until, timeout=timeout, doing="moving")


for _action, _wanted in (("stop", "stopped"), ("start", "running"), ("restart", "running"), ("rm", "terminated")):
    cli.add_command(_lifecycle(_action, _wanted))
cli.add_command(snapshots.snapshot)
for _command in account.COMMANDS:
    cli.add_command(_command)


@cli.command()
@click.argument("instance_id")
@click.option("--lines", "-n", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output (Ctrl-C ends).")
@click.option("--interval", type=float, default=2.0, help="Seconds between polls with -f.")
@click.pass_context
def logs(ctx: click.Context, instance_id: str, lines: int, follow: bool, interval: float) -> None:
    """The container's output."""
    client = api(ctx)
    path = f"/api/gpu/instances/{instance_id}/logs"
    seen: list[str] = []
    while True:
        text = client.get(path, lines=lines if not seen else 1000)["logs"]
        current = text.splitlines()
        for line in _new_lines(seen, current):
            click.echo(line)
        seen = current
        sys.stdout.flush()
        if not follow:
            return
        time.sleep(interval)


def _new_lines(seen: list[str], current: list[str]) -> list[str]:
    """Lines of `current` after the longest tail of `seen` it begins with."""
    if not seen:
        return current
    for size in range(min(len(seen), len(current)), 0, -1):
        if seen[-size:] == current[:size]:
            return current[size:]
    return current


@cli.command()
@click.argument("instance_id")
@json_option
@click.pass_context
def events(ctx: click.Context, instance_id: str, as_json: bool) -> None:
    """The instance's timeline."""
    rows = api(ctx).pages(f"/api/gpu/instances/{instance_id}/events")
    emit(rows, as_json, lambda: table(rows, ["at", "kind", "source", "message"]))


# -- ssh, scp, rsync ---------------------------------------------------------------------

identity_option = click.option("--identity", "-i", help="Private key file (default: ssh's own choice).")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("instance_id")
@identity_option
@click.option("-t", "tty", is_flag=True, help="Force a terminal (as ssh -t).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ssh(ctx: click.Context, instance_id: str, identity: str | None, tty: bool, command: tuple[str, ...]) -> None:
    """Open a shell on the instance, or run `gpucloud ssh ID -- CMD`."""
    target = sshmod.target_of(api(ctx).get(f"/api/gpu/instances/{instance_id}"))
    ctx.exit(sshmod.ssh_run(target, identity=identity, command=list(command), tty=tty or None))


def _copy(tool: str) -> click.Command:
    @click.argument("instance_id")
    @click.argument("paths", nargs=-1, required=True)
    @identity_option
    @click.option("--recursive", "-r", is_flag=True)
    @click.pass_context
    def command(ctx: click.Context, instance_id: str, paths: tuple[str, ...], identity: str | None, recursive: bool):
        if len(paths) < 2:
            raise click.UsageError("give at least one source and a destination; ':path' is on the instance")
        target = sshmod.target_of(api(ctx).get(f"/api/gpu/instances/{instance_id}"))
        argv = sshmod.copy_argv(
            tool, target, identity=identity, sources=list(paths[:-1]), dest=paths[-1], recursive=recursive
        )
        ctx.exit(sshmod.subprocess.call(argv))

    command.__doc__ = f"Copy files with {tool}: `gpucloud {tool} ID ./data :/workspace/` (':' = on the instance)."
    return click.command(name=tool)(command)


cli.add_command(_copy("scp"))
cli.add_command(_copy("rsync"))


def main() -> None:  # pragma: no cover - the console script
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
