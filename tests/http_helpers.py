"""A real HTTP server on 127.0.0.1 for tests that need something to answer POSTs (a pod, a model)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable

Answer = tuple[int, dict[str, str], bytes]  # status, headers, JSON body


def json_server(answer: Callable[[], Answer]) -> tuple[str, http.server.ThreadingHTTPServer]:
    """Answers every POST with `answer()`; returns its base URL and the server (call `shutdown()`)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            status, headers, body = answer()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server
