"""Run the simulator on a real port in a background thread (for tests, benchmarks and demos).

Served by waitress, which keeps HTTP/1.1 connections alive as Facebook does (werkzeug's
development server closes every connection), so that clients are measured with their
connection pools, and a fixed pool of threads answers: a simulated latency or fault delay holds
one of them, never the others.
"""
from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

import waitress
from waitress.server import BaseWSGIServer

from sandbox.app import create_app
from sandbox.state import State
from sandbox.webhooks import Runtime

THREADS = 128  # answers that may wait at once (latency, fault delays) across every client
logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth": expected under load


class SandboxServer:
    """The simulator app served by waitress on a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state: State | None = None,
                 **config: Any) -> None:
        self.host = host
        self.port = port
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
        return f"http://{self.host}:{self._server.effective_port}"

    def start(self) -> SandboxServer:
        """Bind (port 0 picks a free one) and serve in the background."""
        self._server = waitress.create_server(stamp_arrival(self.app), host=self.host, port=self.port,
                                              threads=THREADS, channel_timeout=120, ident="sandbox",
                                              clear_untrusted_proxy_headers=True)
        self._thread = threading.Thread(target=self._server.run, name="sandbox-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the HTTP server and the webhook scheduler, and release the socket."""
        server, self._server = self._server, None
        if server is not None:
            def close_all() -> None:  # in the server's loop thread: its map is not thread-safe
                for channel in list(server._map.values()):
                    channel.close()
            server.trigger.pull_trigger(close_all)
            if self._thread is not None:
                self._thread.join(5)
            server.task_dispatcher.shutdown(timeout=5)
        self.runtime.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def stamp_arrival(app):
    """WSGI wrapper noting when a request reached the app: simulated latency counts from there."""
    def wrapped(environ, start_response):
        environ["sandbox.arrived"] = time.monotonic()
        return app(environ, start_response)
    return wrapped
