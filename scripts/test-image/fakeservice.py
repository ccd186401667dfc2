#!/usr/bin/env python3
"""Stand-ins for jupyter, code-server and ttyd in the CI test image, which no registry
can fill. Installed under those names, they take the arguments and environment the
shared start script (templates_app/images/common/gpucloud-common.sh) gives the real
programs, and check the access token as each real one does:

- jupyter lab --port=N, token in JUPYTER_TOKEN: 200 with `?token=` or
  `Authorization: token <t>`, else 403;
- code-server --bind-addr H:N, password in PASSWORD: /healthz answers anyone; other
  paths redirect to ./login without the session cookie; POST /login with the password
  sets the cookie, a wrong one is refused with 401;
- ttyd --port N --credential user:pass: HTTP basic auth, 401 without it.
"""

import base64
import hashlib
import hmac
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PROG = os.path.basename(sys.argv[0])
ARGS = sys.argv[1:]


def option(*names: str, default: str = "") -> str:
    for i, arg in enumerate(ARGS):
        for name in names:
            if arg == name and i + 1 < len(ARGS):
                return ARGS[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return default


if PROG == "jupyter":
    PORT, SECRET = int(option("--port", default="8888")), os.environ.pop("JUPYTER_TOKEN", "")
elif PROG == "code-server":
    PORT, SECRET = (
        int(option("--bind-addr", default="127.0.0.1:8080").rsplit(":", 1)[1]),
        os.environ.pop("PASSWORD", ""),
    )
elif PROG == "ttyd":
    PORT, SECRET = int(option("--port", "-p", default="7681")), option("--credential", "-c")
else:
    sys.exit(f"fakeservice: unknown name {PROG}")
if not SECRET:
    sys.exit(f"{PROG}: refusing to serve without a secret")
COOKIE = hashlib.sha256(("session:" + SECRET).encode()).hexdigest()


def same(given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), SECRET.encode())


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        header = self.headers.get("Authorization", "")
        if PROG == "jupyter":
            given = (parse_qs(url.query).get("token") or [""])[0]
            if header.lower().startswith("token "):
                given = header[6:].strip()
            ok = same(given)
        elif PROG == "code-server":
            if url.path in ("/healthz", "/login"):
                return self.reply(200, b"code-server login\n")
            ok = f"code-server-session={COOKIE}" in self.headers.get("Cookie", "")
            if not ok:
                return self.reply(302, headers={"Location": "./login"})
        else:
            try:
                ok = header.startswith("Basic ") and same(base64.b64decode(header[6:]).decode())
            except ValueError:
                ok = False
            if not ok:
                return self.reply(401, b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="ttyd"'})
        if ok:
            self.reply(200, b"gpucloud workspace: ok\n")
        else:
            self.reply(403, b"forbidden: token required\n")

    def do_POST(self) -> None:
        if PROG != "code-server" or urlparse(self.path).path != "/login":
            return self.reply(404)
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        if same((form.get("password") or [""])[0]):
            return self.reply(302, headers={"Location": "./", "Set-Cookie": f"code-server-session={COOKIE}; Path=/"})
        self.reply(401, b"Incorrect password\n")

    def log_message(self, *args: object) -> None:  # no request lines (tokens) in logs
        pass


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()  # noqa: S104
