"""gunicorn settings for the web process (also used by the benchmarks, for a fair baseline)."""

import multiprocessing
import os
import socket

from gunicorn import glogging
from gunicorn.workers import gthread

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# CPUs + 1: the webhook is CPU-bound Python; more processes than that only add switching.
# 8 threads: a webhook thread waits on Redis, and the webhooks waiting together in a worker
# share one Redis call (storage.inbound.SharedWrites), so 8 threads carried 3.4-4.1 webhooks per
# call against ~2 with 4, and took 1-event POSTs from 0.70-0.79 to 0.81-0.85 of the bare app;
# 16 slowed the bare app and 100-event POSTs (bench/webhook_ingest.py, 2 CPUs, 2026-11-26).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 30  # a request taking longer is a bug: the worker is replaced
graceful_timeout = 30  # on SIGTERM, in-flight requests get this long to finish
keepalive = 5
# Recycle workers now and then, jittered so they do not restart together.
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "100000"))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("ACCESS_LOG", "-") or None
access_log_format = (
    '{"ts":"%(t)s","method":"%(m)s","path":"%(U)s","status":%(s)s,"ms":%(M)s,'
    '"id":"%({x-request-id}i)s"}'
)
errorlog = "-"
control_socket_disable = True  # one shared path per user: two instances (tests, bench) clash

# Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads new
# connections evenly over them. On one shared socket the worker that woke first took most of
# a burst of keep-alive connections and kept them (30/2/0 of 32 was common in
# bench/webhook_ingest.py), leaving the other processes idle. A connection still queued on a
# worker's socket when that worker closes it would be reset: see ThreadWorker.
reuse_port = True


class ThreadWorker(gthread.ThreadWorker):
    """gthread, leaving its listening socket as soon as it stops for good.

    gthread keeps its socket open until its graceful shutdown is over (seconds, while it
    finishes requests and lingers on kept-alive connections), so meanwhile the kernel still
    queues new connections on it, and closing it at the end resets them: webhooks and API
    calls refused whenever a worker is replaced after max_requests. This one, once it stops
    accepting for good, takes the connections already queued (served like any other during
    the shutdown) and closes its socket, so new connections go to the other workers.
    (Defined here, not in bot/, so that the benchmark's bare app can use this file too.)"""

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive and self.cfg.reuse_port:
            self._leave_listening()

    def _leave_listening(self) -> None:
        for listener in self.sockets:
            while listener.sock is not None:
                accepted = self.nr_conns
                self.accept(listener)  # one queued connection, if any; never blocks
                if self.nr_conns == accepted:
                    listener.close()  # gthread closes it again at exit: a no-op then


worker_class = ThreadWorker


def on_starting(server):
    """SO_REUSEPORT would let this server silently share an address with another one already
    listening there (a second `make run`): refuse to start instead, as a plain bind would."""
    for address in server.cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket path: reuse_port does not apply
        host, port = address
        with socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
        ) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers: fine
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise SystemExit(
                    f"cannot listen on {host}:{port}: {exc.strerror}; "
                    "is another server running there?"
                ) from None


class Logger(glogging.Logger):
    """gunicorn's logger, naming the address in "Listening at:".

    With reuse_port the master opens no socket (each worker opens its own), and gunicorn builds
    that line from the master's sockets: "Listening at:  (pid)". Name the configured address."""

    def info(self, msg, *args, **kwargs):
        if msg.startswith("Listening at:") and args and not args[0]:
            scheme = "https" if self.cfg.is_ssl else "http"
            args = (
                ",".join(_address_url(address, scheme) for address in self.cfg.address),
                *args[1:],
            )
        super().info(msg, *args, **kwargs)


def _address_url(address, scheme: str) -> str:
    """An address as gunicorn's own sockets print it."""
    if not isinstance(address, tuple):
        return f"unix:{address}"
    host, port = address[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


logger_class = Logger
