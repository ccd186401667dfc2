"""A webhook receiver on loopback: records each request and answers the codes it is told."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    codes: list[int] = field(default_factory=list)  # answered in turn; the last one repeats
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def answer(self) -> int:
        if not self.codes:
            return 200
        return self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]


def serve(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.received.append(Received(path=self.path, headers=dict(self.headers.items()), body=body))
            code = receiver.answer()
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/gpu"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
