"""`gpucloud login|logout|gpus|templates|balance|usage`: the account and the catalog."""

from __future__ import annotations

import click

from gpucloud_cli.client import DEFAULT_URL, Api, config_clear, config_load, config_save
from gpucloud_cli.context import api, json_option
from gpucloud_cli.output import emit, table

# -- login -------------------------------------------------------------------------------


@click.command()
@click.option("--token", help="An API token (made on the server's web page or by an operator). Asked when absent.")
@click.pass_context
def login(ctx: click.Context, token: str | None) -> None:
    """Check a token against the server and store it (file mode 0600)."""
    url = (ctx.obj["url"] or config_load().get("url") or DEFAULT_URL).rstrip("/")
    if not token:
        token = click.prompt("API token", hide_input=True).strip()
    balance = Api(url=url, token=token).get("/api/billing/balance")
    path = config_save(url=url, token=token)
    click.echo(f"Logged in to {url} (balance ${balance['balance_usd']}); token stored in {path}")


@click.command()
def logout() -> None:
    """Forget the stored token."""
    click.echo("Logged out." if config_clear() else "Not logged in.")


# -- catalog -----------------------------------------------------------------------------


@click.command()
@json_option
@click.pass_context
def gpus(ctx: click.Context, as_json: bool) -> None:
    """GPU types: free and total GPUs, hourly rate."""
    rows = api(ctx).get("/api/gpu/availability")
    emit(rows, as_json, lambda: table(rows, ["sku", "display_name", "free", "total", "rate_per_hour"]))


@click.command()
@json_option
@click.pass_context
def templates(ctx: click.Context, as_json: bool) -> None:
    """The template catalog."""
    rows = api(ctx).pages("/api/gpu/templates")
    emit(rows, as_json, lambda: table(rows, ["slug", "name", "category", "min_gpu_memory_mb", "access_methods"]))


# -- money -------------------------------------------------------------------------------


@click.command()
@json_option
@click.pass_context
def balance(ctx: click.Context, as_json: bool) -> None:
    """My balance."""
    body = api(ctx).get("/api/billing/balance")
    emit(body, as_json, lambda: click.echo(f"${body['balance_usd']} {body['currency']}"))


@click.command()
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_context
def usage(ctx: click.Context, limit: int, as_json: bool) -> None:
    """My usage segments (GPU time, storage), newest first."""
    rows = api(ctx).pages("/api/billing/usage", limit=limit)
    emit(
        rows,
        as_json,
        lambda: table(rows, ["instance", "kind", "gpu_type", "started_at", "duration_seconds", "cost_so_far_usd"]),
    )


COMMANDS = (login, logout, gpus, templates, balance, usage)
