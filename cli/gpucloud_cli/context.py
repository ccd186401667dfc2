"""What every command shares: the API client of this invocation and the --json flag."""

from __future__ import annotations

import click

from gpucloud_cli.client import Api


def api(ctx: click.Context) -> Api:
    return Api.from_environment(url=ctx.find_root().obj["url"])


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
