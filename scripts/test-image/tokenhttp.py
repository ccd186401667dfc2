"""A Jupyter-like HTTP service for the test image: answers 200 only with the token.

Accepts the token as `?token=` or `Authorization: token <t>`, as JupyterLab does.
"""

import hmac
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = os.environ.pop("GPUCLOUD_HTTP_TOKEN")
PORT = int(os.environ.get("GPUCLOUD_HTTP_PORT", "8888"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        given = (query.get("token") or [""])[0]
        header = self.headers.get("Authorization", "")
        if header.lower().startswith("token "):
            given = header[6:].strip()
        if given and hmac.compare_digest(given, TOKEN):
            body, status = b"gpucloud workspace: ok\n", 200
        else:
            body, status = b"forbidden: token required\n", 403
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # no request lines (tokens) in logs
        pass


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()  # noqa: S104
