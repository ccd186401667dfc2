#!/usr/bin/env python3
"""The images' own web services, behind the instance's credential (user `root`, password
the instance's access token): the catalog's and the CI test image's run this same file.

    gpucloud-web terminal --port 7681 --cwd /workspace [-- bash -l]
    gpucloud-web proxy --port 8188 --to 127.0.0.1:8189

`terminal`: the web terminal, a login shell in a real pseudo-terminal carried over a
websocket by terminado (the terminal backend of Jupyter's server) and drawn by xterm.js
(npm's @xterm/xterm and @xterm/addon-fit, installed beside this file in static/ by
install.sh). Each websocket gets a shell of its own, ended when it closes. Messages are
terminado's JSON arrays: the client sends `["stdin", text]` and `["set_size", rows,
cols]`; the server sends `["setup", {}]`, `["stdout", text]`, and `["disconnect", 1]`
when the shell exits.

`proxy`: an authenticating reverse proxy (HTTP and websockets) for a web app that has
no login of its own (ComfyUI), listening on loopback behind it.

Every path answers 401 without the credential. HTTP basic auth is checked in constant
time; a request that passes it gets a session cookie (HttpOnly, named and valued from
the password) that is accepted as well, since not every browser sends basic credentials
on a websocket. The password is read from GPUCLOUD_WEB_PASSWORD and removed from the
environment before any shell or upstream starts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import sys
from pathlib import Path
from typing import Any

import terminado
import tornado.httpclient
import tornado.web
import tornado.websocket

STATIC = Path(os.environ.get("GPUCLOUD_WEB_STATIC", Path(__file__).resolve().parent / "static"))
REALM = "GPU Cloud instance"
# Hop-by-hop headers (RFC 9110, 7.6.1) and the ones tornado sets itself: never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Terminal</title>
<link rel="stylesheet" href="static/xterm.css">
<style>html, body, #terminal { height: 100%; margin: 0; background: #000; }</style>
</head><body><div id="terminal"></div>
<script src="static/xterm.js"></script><script src="static/addon-fit.js"></script>
<script>
const term = new Terminal({cursorBlink: true}), fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("terminal"));
const url = new URL("websocket", location.href);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(url);
const size = () => { fit.fit(); socket.send(JSON.stringify(["set_size", term.rows, term.cols])); };
socket.onopen = () => { size(); term.focus(); };
socket.onmessage = (event) => {
  const [kind, data] = JSON.parse(event.data);
  if (kind === "stdout") term.write(data);
  if (kind === "disconnect") term.write("\\r\\n[the shell has exited]\\r\\n");
};
socket.onclose = () => term.write("\\r\\n[disconnected]\\r\\n");
term.onData((data) => socket.send(JSON.stringify(["stdin", data])));
window.addEventListener("resize", size);
</script></body></html>
"""


class Credential:
    """User root and the password; the session cookie's name and value derive from it."""

    def __init__(self, password: str) -> None:
        self.password = password.encode()
        digest = hmac.new(self.password, b"gpucloud-web session", hashlib.sha256).hexdigest()
        # Named per password: two instances on one host (direct mode, cookies ignore
        # ports) keep their own cookies.
        self.cookie_name, self.cookie_value = f"gpucloud-{digest[:12]}", digest[12:]

    def basic_ok(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, given = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except binascii.Error:
            return False
        return hmac.compare_digest(user, b"root") & hmac.compare_digest(given, self.password)

    def cookie_ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.cookie_value.encode())


def guard(handler: tornado.web.RequestHandler) -> bool:
    """True when the request carries the credential; else answers 401 and returns False."""
    credential: Credential = handler.settings["credential"]
    if credential.cookie_ok(handler.get_cookie(credential.cookie_name)):
        return True
    if credential.basic_ok(handler.request.headers.get("Authorization", "")):
        if handler.request.headers.get("Upgrade", "").lower() != "websocket":
            handler.set_cookie(credential.cookie_name, credential.cookie_value, httponly=True, samesite="Lax", path="/")
        return True
    handler.set_status(401)
    handler.set_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
    handler.finish("401: this service needs the instance's credential (user root, the access token)\n")
    return False


class Guarded(tornado.web.RequestHandler):
    def prepare(self) -> None:
        guard(self)


class PageHandler(Guarded):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(PAGE)


class StaticHandler(Guarded, tornado.web.StaticFileHandler):
    pass


class ShellSocket(Guarded, terminado.TermSocket):
    """terminado's websocket, refused with 401 before the upgrade without the credential."""


class ProxyHandler(Guarded, tornado.websocket.WebSocketHandler):
    """Forwards every request to the upstream; a websocket upgrade becomes a websocket
    to the upstream, messages relayed both ways until either side closes."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    upstream_socket: tornado.websocket.WebSocketClientConnection | None = None

    def _headers_out(self) -> dict[str, str]:
        credential: Credential = self.settings["credential"]
        headers: dict[str, str] = {}
        for name, value in self.request.headers.get_all():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower == "authorization" or lower.startswith("sec-websocket-"):
                continue
            if lower == "cookie":  # the proxy's own cookie stays here
                value = "; ".join(
                    part for part in value.split("; ") if not part.startswith(credential.cookie_name + "=")
                )
                if not value:
                    continue
            headers[name] = value if name not in headers else f"{headers[name]}, {value}"
        return headers

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await super().get(*args, **kwargs)
        else:
            await self.forward()

    async def open(self, *args: Any, **kwargs: Any) -> None:
        request = tornado.httpclient.HTTPRequest(
            "ws://" + self.settings["upstream"] + self.request.uri, headers=self._headers_out()
        )
        try:
            self.upstream_socket = await tornado.websocket.websocket_connect(
                request, on_message_callback=self._from_upstream, max_message_size=self.max_message_size
            )
        except (OSError, tornado.httpclient.HTTPClientError, tornado.websocket.WebSocketError):
            self.close(1011, "the service behind this address is not answering")

    def _from_upstream(self, message: str | bytes | None) -> None:
        if message is None:
            self.close()
        else:
            try:
                self.write_message(message, binary=isinstance(message, bytes))
            except tornado.websocket.WebSocketClosedError:
                self.on_close()

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream_socket is not None:
            await self.upstream_socket.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.upstream_socket is not None:
            self.upstream_socket.close()

    async def forward(self) -> None:
        method = self.request.method or "GET"
        request = tornado.httpclient.HTTPRequest(
            "http://" + self.settings["upstream"] + self.request.uri,
            method=method,
            headers=self._headers_out(),
            body=self.request.body if method in ("POST", "PUT", "PATCH") else None,
            follow_redirects=False,
            decompress_response=False,
            allow_nonstandard_methods=True,
            request_timeout=3600,
        )
        response = await tornado.httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        if response.code == 599:  # tornado's "no HTTP response at all"
            self.set_status(502)
            self.finish("502: the service behind this address is not answering (yet)\n")
            return
        self.set_status(response.code, response.reason)
        self.clear_header("Content-Type")
        for name, value in response.headers.get_all():
            lower = name.lower()
            if lower == "set-cookie":
                self.add_header(name, value)
            elif lower not in HOP_BY_HOP and lower != "content-length":
                self.set_header(name, value)
        self.finish(response.body if method != "HEAD" else None)

    head = post = put = patch = delete = options = forward  # type: ignore[assignment]


def make_terminal(*, credential: Credential, command: list[str], cwd: str) -> tornado.web.Application:
    manager = terminado.UniqueTermManager(shell_command=command, term_settings={"cwd": cwd})
    return tornado.web.Application(
        [
            (r"/", PageHandler),
            (r"/websocket", ShellSocket, {"term_manager": manager}),
            (r"/static/(.*)", StaticHandler, {"path": str(STATIC)}),
        ],
        credential=credential,
        websocket_ping_interval=30,
    )


def make_proxy(*, credential: Credential, upstream: str) -> tornado.web.Application:
    return tornado.web.Application(
        [(r".*", ProxyHandler)], credential=credential, upstream=upstream, websocket_ping_interval=30
    )


async def serve(app: tornado.web.Application, *, port: int, address: str) -> None:
    app.listen(port, address=address, max_body_size=4 << 30)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="gpucloud-web", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="service", required=True)
    terminal = commands.add_parser("terminal", help="a login shell over a websocket")
    terminal.add_argument("--cwd", default="/workspace")
    terminal.add_argument("command", nargs="*", help="the shell to run (default: bash -l)")
    proxy = commands.add_parser("proxy", help="an authenticating reverse proxy")
    proxy.add_argument("--to", required=True, metavar="HOST:PORT", help="the upstream, on loopback")
    for sub in (terminal, proxy):
        sub.add_argument("--port", type=int, required=True)
        sub.add_argument("--address", default="0.0.0.0")  # noqa: S104 - published through Docker's port map
    args = parser.parse_args()
    # Shells and upstreams inherit this process's environment: the password leaves it first.
    password = os.environ.pop("GPUCLOUD_WEB_PASSWORD", "")
    if not password:
        sys.exit("gpucloud-web: refusing to serve without GPUCLOUD_WEB_PASSWORD")
    credential = Credential(password)
    if args.service == "terminal":
        app = make_terminal(credential=credential, command=args.command or ["bash", "-l"], cwd=args.cwd)
    else:
        tornado.httpclient.AsyncHTTPClient.configure(None, max_body_size=4 << 30)
        app = make_proxy(credential=credential, upstream=args.to)
    asyncio.run(serve(app, port=args.port, address=args.address))


if __name__ == "__main__":
    main()
