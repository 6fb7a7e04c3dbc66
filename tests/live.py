"""Serve a WSGI app over real HTTP on a free port, in a background thread."""
from __future__ import annotations

import threading

from werkzeug.serving import WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    """A werkzeug request handler without the per-request log line."""

    def log_request(self, code="-", size="-") -> None:
        """Skip the access log line."""


class LiveServer:
    def __init__(self, app, host: str = "127.0.0.1"):
        self._server = make_server(host, 0, app, threaded=True)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
