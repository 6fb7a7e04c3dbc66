"""Serve the simulator on a real port from a background thread (tests, benchmarks, demos).

One asyncio event loop reads and answers every connection and keeps HTTP/1.1 connections
alive, as Facebook does, so that clients are measured with their connection pools.

Graph API calls run on the loop itself, and their simulated latency (or a fault's delay) is a
timer that sends the answer when its time comes (`graph.hold_answer`), not a sleeping thread.
So the simulator adds little to the latency it is asked for: with a thread per waiting answer
(waitress, before) a client at 16 in flight timed 59-61 ms for 50 ms asked on a busy 2-CPU
machine, 4-5 ms of it in the server's hand-offs between its reading thread and the answering
threads, and could not get near in-flight / latency (now 54-55 ms).
Everything else (the control API, whose flush waits for webhooks) runs on a pool of threads.

Only what Facebook's clients and a browser send is understood: Content-Length bodies, one
request at a time per connection (no pipelining, no chunked request bodies).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from sandbox.app import create_app
from sandbox.graph import ANSWER_AT, ARRIVED
from sandbox.state import State
from sandbox.webhooks import Runtime

log = logging.getLogger(__name__)
GRAPH_PATH = re.compile(r"/v\d+\.\d+/")  # answered on the loop: never blocks, only holds answers
POOL_THREADS = 32
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
STOP_TIMEOUT_S = 5


class HttpError(Exception):
    """A request we cannot take: answered with `status` and the connection closed."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class WaitForBody(Exception):
    """The head is in, the body is not: `expects_continue` if the client waits to be asked."""

    def __init__(self, expects_continue: bool) -> None:
        super().__init__()
        self.expects_continue = expects_continue


class Request(NamedTuple):
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # lower-case names
    body: bytes
    size: int  # bytes it took in the buffer

    @property
    def keep_alive(self) -> bool:
        connection = ",".join(v for k, v in self.headers if k == "connection").lower()
        return self.version == "HTTP/1.1" and "close" not in connection


def parse_request(buffer: bytearray) -> Request | None:
    """The first whole request in `buffer`; None if its head is not all there yet, WaitForBody
    if its body is not."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise HttpError("431 Request Header Fields Too Large", "request head too large")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise HttpError("400 Bad Request", "malformed request line")
    if parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError("505 HTTP Version Not Supported", "HTTP/1.0 or HTTP/1.1 only")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise HttpError("400 Bad Request", "malformed header line")
        headers.append((name.strip().lower(), value.strip()))
    names = {name for name, _ in headers}
    if "transfer-encoding" in names:
        raise HttpError("411 Length Required", "send the body with a Content-Length")
    length = next((value for name, value in headers if name == "content-length"), "0")
    if not length.isdigit():
        raise HttpError("400 Bad Request", "bad Content-Length")
    if int(length) > MAX_BODY_BYTES:
        raise HttpError("413 Request Entity Too Large", "request body too large")
    size = end + 4 + int(length)
    if len(buffer) < size:
        expects = any(
            name == "expect" and value.lower() == "100-continue" for name, value in headers
        )
        raise WaitForBody(expects)
    return Request(parts[0], parts[1], parts[2], headers, bytes(buffer[end + 4 : size]), size)


class SandboxServer:
    """The simulator app served from an event loop on a daemon thread."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, state: State | None = None, **config: Any
    ) -> None:
        self.host = host
        self.port = port
        self.app = create_app(state, **config)
        self.runtime: Runtime = self.app.extensions["sandbox"]
        self.state: State = self.runtime.state
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool: ThreadPoolExecutor | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.bound_port: int | None = None

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:53211 (also the GRAPH_API_URL)."""
        if self.bound_port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.bound_port}"

    def start(self) -> SandboxServer:
        """Bind (port 0 picks a free one) and serve in the background."""
        self.pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="sandbox-app")
        bound: Future = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(bound,), name="sandbox-http", daemon=True
        )
        self._thread.start()
        try:
            self.bound_port = bound.result(STOP_TIMEOUT_S)
        except BaseException:
            self.pool.shutdown()
            raise
        return self

    def _serve(self, bound: Future) -> None:
        """The loop's thread (a loop of its own: the caller's thread may be running one)."""
        loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                loop.create_server(lambda: Connection(self), self.host, self.port)
            )
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            loop.close()
            bound.set_exception(exc)
            return
        self.loop = loop
        bound.set_result(self._server.sockets[0].getsockname()[1])
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        """Close every connection, stop the loop and the webhook scheduler, release the port."""
        loop, self.loop = self.loop, None
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(STOP_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.runtime.close()

    async def _close(self) -> None:
        self._server.close()
        for connection in list(self.connections):
            connection.transport.abort()
        await self._server.wait_closed()
        await asyncio.sleep(0)  # the aborted transports close their sockets on the next turn

    def call_app(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """Run the Flask app on one request: (status, headers, body)."""
        answer: dict[str, Any] = {}

        def start_response(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, headers

        try:
            chunks = self.app(environ, start_response)
            try:
                body = b"".join(chunks)
            finally:
                getattr(chunks, "close", lambda: None)()
        except Exception:
            log.exception("sandbox request failed")
            return "500 Internal Server Error", [("Content-Type", "text/plain")], b"internal error"
        return answer["status"], answer["headers"], body

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Connection(asyncio.Protocol):
    """One client connection: read a request, answer it (maybe later), then read the next."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.arrived: float | None = None  # when the first byte of the next request was read
        self.busy = False
        self.continued = False  # "100 Continue" sent for the request being read

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.arrived is None:
            self.arrived = time.monotonic()
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        try:
            request = parse_request(self.buffer)
        except HttpError as error:
            self._write(
                error.status,
                [("Content-Type", "text/plain")],
                error.reason.encode(),
                keep_alive=False,
            )
            return
        except WaitForBody as waiting:
            if waiting.expects_continue and not self.continued:  # curl asks, for bodies over 1 KiB
                self.continued = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        if request is None:
            return
        self.continued = False
        del self.buffer[: request.size]
        arrived, self.arrived = self.arrived, (time.monotonic() if self.buffer else None)
        self.busy = True
        self.transport.pause_reading()
        environ = self._environ(request, arrived)
        if GRAPH_PATH.match(environ["PATH_INFO"]):
            self._answer(request, environ, self.server.call_app(environ))
        else:
            future = asyncio.get_running_loop().run_in_executor(
                self.server.pool, self.server.call_app, environ
            )
            future.add_done_callback(lambda done: self._answer(request, environ, done.result()))

    def _environ(self, request: Request, arrived: float) -> dict[str, Any]:
        path, _, query = request.target.partition("?")
        peer = self.transport.get_extra_info("peername") or ("", 0)
        environ = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self.server.host,
            "SERVER_PORT": str(self.server.bound_port),
            "SERVER_PROTOCOL": request.version,
            "REMOTE_ADDR": peer[0],
            "REMOTE_PORT": str(peer[1]),
            "CONTENT_LENGTH": str(len(request.body)) if request.body else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            ARRIVED: arrived,
            ANSWER_AT: 0.0,
        }
        for name, value in request.headers:
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ[key] = value
            elif key != "CONTENT_LENGTH":
                key = "HTTP_" + key
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _answer(
        self,
        request: Request,
        environ: dict[str, Any],
        answer: tuple[str, list[tuple[str, str]], bytes],
    ) -> None:
        hold = environ[ANSWER_AT] - time.monotonic()
        args = (*answer, request.keep_alive, request.method == "HEAD")
        if hold > 0:
            asyncio.get_running_loop().call_later(hold, self._write, *args)
        else:
            self._write(*args)

    def _write(
        self,
        status: str,
        headers: list[tuple[str, str]],
        body: bytes,
        keep_alive: bool,
        head_only: bool = False,
    ) -> None:
        if self.transport.is_closing():
            return
        lines = [f"HTTP/1.1 {status}"]
        lines += [
            f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")
        ]
        lines.append(f"Content-Length: {len(body)}")
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(head if head_only else head + body)
        if not keep_alive:
            self.transport.close()
            return
        self.busy = False
        self.transport.resume_reading()
        if self.buffer:
            self._next()
