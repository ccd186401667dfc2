"""A local stand-in for the Cloudflare API v4, for the real `cloudflare` SDK to talk to.

Why a fake: the real API needs an account, a zone and a tunnel on the internet, which
tests cannot reach. It answers the paths exposure.py uses, with Cloudflare's envelope
(`success`, `errors`, `messages`, `result`, `result_info`), Cloudflare's checks (bearer
token, one CNAME per name, a catch-all last ingress rule) and its error codes, keeps
state like Cloudflare does, and records every call so tests can assert on them.

    GET|PUT  /client/v4/accounts/{account}/cfd_tunnel/{tunnel}/configurations
    GET|POST /client/v4/zones/{zone}/dns_records      (filters: type, name, name.startswith)
    DELETE   /client/v4/zones/{zone}/dns_records/{id}
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

PREFIX = "/client/v4"
TUNNEL_PATH = re.compile(rf"^{PREFIX}/accounts/(?P<account>[^/]+)/cfd_tunnel/(?P<tunnel>[^/]+)/configurations$")
RECORDS_PATH = re.compile(rf"^{PREFIX}/zones/(?P<zone>[^/]+)/dns_records$")
RECORD_PATH = re.compile(rf"^{PREFIX}/zones/(?P<zone>[^/]+)/dns_records/(?P<record>[^/]+)$")


def _now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakeCloudflare:
    token: str
    account_id: str
    zone_id: str
    zone_name: str
    tunnel_id: str
    calls: list[Call] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    tunnel_config: dict[str, Any] = field(default_factory=lambda: {"ingress": [{"service": "http_status:404"}]})
    tunnel_version: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""
    # Called with (method, path) before each request is handled, on the server's
    # thread: a test looks at the database from there, or holds a request back.
    before: Callable[[str, str], None] | None = None

    @property
    def ingress(self) -> list[dict[str, Any]]:
        return self.tunnel_config.get("ingress", [])

    def calls_to(self, method: str, fragment: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and fragment in c.path]

    # --- request handling -------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any, auth: str) -> tuple[int, dict]:
        if self.before is not None:
            self.before(method, path)
        with self.lock:
            self.calls.append(Call(method, path, query, body))
            if auth != f"Bearer {self.token}":
                return 403, _failure(10000, "Authentication error")
            if m := TUNNEL_PATH.match(path):
                if m["account"] != self.account_id or m["tunnel"] != self.tunnel_id:
                    return 404, _failure(1003, "Tunnel not found")
                return self._tunnel(method, body)
            if m := RECORDS_PATH.match(path):
                if m["zone"] != self.zone_id:
                    return 404, _failure(
                        7003, "Could not route to /zones/..., perhaps your object identifier is invalid?"
                    )
                if method == "GET":
                    return self._list_records(query)
                if method == "POST":
                    return self._create_record(body)
            if (m := RECORD_PATH.match(path)) and method == "DELETE":
                if m["zone"] != self.zone_id or m["record"] not in self.records:
                    return 404, _failure(81044, "Record does not exist.")
                del self.records[m["record"]]
                return 200, _success({"id": m["record"]})
            return 404, _failure(7000, "No route for that URI")

    def _tunnel(self, method: str, body: Any) -> tuple[int, dict]:
        if method == "PUT":
            config = (body or {}).get("config") or {}
            ingress = config.get("ingress") or []
            if not ingress or ingress[-1].get("hostname"):
                return 400, _failure(1056, "The last ingress rule must match all URLs (no hostname)")
            hostnames = [rule["hostname"] for rule in ingress if rule.get("hostname")]
            if len(hostnames) != len(set(hostnames)):
                return 400, _failure(1056, "Duplicate ingress hostname")
            self.tunnel_config = config
            self.tunnel_version += 1
        elif method != "GET":
            return 405, _failure(10405, "Method not allowed")
        return 200, _success(
            {
                "account_id": self.account_id,
                "tunnel_id": self.tunnel_id,
                "config": self.tunnel_config,
                "version": self.tunnel_version,
                "source": "cloudflare",
                "created_at": _now(),
            }
        )

    def _list_records(self, query: dict[str, str]) -> tuple[int, dict]:
        found = list(self.records.values())
        if query.get("type"):
            found = [r for r in found if r["type"] == query["type"]]
        if query.get("name"):
            found = [r for r in found if r["name"] == query["name"].lower()]
        if query.get("name.exact"):
            found = [r for r in found if r["name"] == query["name.exact"].lower()]
        if query.get("name.startswith"):
            found = [r for r in found if r["name"].startswith(query["name.startswith"].lower())]
        page, per_page = int(query.get("page", 1)), int(query.get("per_page", 100))
        chunk = found[(page - 1) * per_page : page * per_page]
        info = {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(found)}
        return 200, {**_success(chunk), "result_info": info}

    def _create_record(self, body: Any) -> tuple[int, dict]:
        name = str((body or {}).get("name", "")).lower().rstrip(".")
        if not name or not (name == self.zone_name or name.endswith("." + self.zone_name)):
            return 400, _failure(9005, "Content for the record's name is not in the zone")
        if body.get("type") == "CNAME" and any(r["name"] == name for r in self.records.values()):
            return 400, _failure(81053, "An A, AAAA, or CNAME record with that host already exists.")
        record = {
            "id": uuid.uuid4().hex,
            "name": name,
            "type": body.get("type"),
            "content": body.get("content"),
            "proxied": bool(body.get("proxied", False)),
            "proxiable": True,
            "ttl": body.get("ttl", 1),
            "comment": body.get("comment"),
            "tags": [],
            "settings": {},
            "meta": {},
            "created_on": _now(),
            "modified_on": _now(),
        }
        self.records[record["id"]] = record
        return 200, _success(record)


def _success(result: Any) -> dict:
    return {"success": True, "errors": [], "messages": [], "result": result}


def _failure(code: int, message: str) -> dict:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def serve(fake: FakeCloudflare) -> ThreadingHTTPServer:
    """Serves `fake` on 127.0.0.1 (a free port) in a daemon thread; sets fake.base_url."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, payload = fake.handle(
                self.command, parts.path, dict(parse_qsl(parts.query)), body, self.headers.get("Authorization", "")
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    return server
