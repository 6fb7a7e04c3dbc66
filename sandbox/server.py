"""Run the simulator on a real port in a background thread (for tests and demos)."""
from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.app import create_app
from sandbox.state import State
from sandbox.webhooks import Runtime


class QuietHandler(WSGIRequestHandler):
    """Request handler that logs errors but not one line per request, and keeps connections
    alive (HTTP/1.1) as Facebook does, so clients are measured with their connection pools."""

    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Skip the access log line."""


class SandboxServer:
    """The simulator app served by a threaded werkzeug server on a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state: State | None = None,
                 quiet: bool = True, **config: Any) -> None:
        self.host = host
        self.port = port
        self.quiet = quiet
        self.app = create_app(state, **config)
        self.runtime: Runtime = self.app.extensions["sandbox"]
        self.state: State = self.runtime.state
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:53211 (also the GRAPH_API_URL)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> SandboxServer:
        """Bind (port 0 picks a free one) and serve in the background."""
        handler = QuietHandler if self.quiet else WSGIRequestHandler
        self._server = make_server(self.host, self.port, self.app, threaded=True,
                                   request_handler=handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="sandbox-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the HTTP server and the webhook scheduler, and release the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5)
            self._server = None
        self.runtime.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
