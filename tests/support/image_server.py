"""A tiny HTTP server that serves test images (and redirects, and scripted provider answers) from a
chosen loopback address. POSTs are answered like GETs, their bodies read and dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# path -> (status, headers, body). Two headers are instructions, not sent: "x-test-send: N" sends
# only the body's first N bytes (its content-length stays the whole), then "x-test-then: stall"
# waits STALL_S before closing, or "x-test-then: close" closes at once.
Routes = dict[str, tuple[int, dict[str, str], bytes]]
STALL_S = 3.0


@contextmanager
def serving(routes: Routes, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `routes` on host:<free port>; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = routes.get(self.path, (404, {}, b"not found"))
            headers = dict(headers)
            send, then = int(headers.pop("x-test-send", len(body))), headers.pop("x-test-then", "")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:send])
            self.wfile.flush()
            if then == "stall":
                time.sleep(STALL_S)
            if then:
                self.close_connection = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
