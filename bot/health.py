"""Operations endpoints: /healthz (Redis reachable) and /metrics (Prometheus)."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from bot import metrics as prometheus
from storage import get_storage

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """200 if Redis answers on a new connection; 503 otherwise."""
    try:
        ping_new_connection(get_storage().redis)
    except RedisError as exc:
        return {"status": "unavailable", "redis": f"unreachable ({type(exc).__name__})"}, 503
    return {"status": "ok", "redis": "ok"}


def ping_new_connection(client: redis.Redis) -> None:
    """PING over a connection of its own, closed at once; raise RedisError if that fails.

    The pool's open connections can outlive the server's address (its unix socket deleted, as a
    second `make run` once did): a PING over one of them still succeeded while every request
    needing a new connection failed with 503. Through Sentinel the new connection asks the
    sentinels where the primary is, as every new connection does: during a failover, before
    they name the promoted replica, it fails (MasterNotFoundError) like the requests do."""
    pool = client.connection_pool
    # No retries: a probe answers at once (redis-py's default backs off for seconds).
    connection = pool.connection_class(**{**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)})
    try:
        connection.connect()
        connection.send_command("PING")
        connection.read_response()  # an error reply is raised as a RedisError
    finally:
        connection.disconnect()


@bp.get("/metrics")
def metrics():
    """Prometheus text format; the numbers are shared by every process (kept in Redis)."""
    body = prometheus.render(get_storage(), current_app.extensions["rq_queue"])
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
