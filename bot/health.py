"""Operations endpoints: /healthz (Redis reachable) and /metrics (Prometheus)."""
from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from bot import metrics as prometheus
from storage import get_storage

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    try:
        get_storage().ping()
    except RedisError as exc:
        return {"status": "unavailable", "redis": f"unreachable ({type(exc).__name__})"}, 503
    return {"status": "ok", "redis": "ok"}


@bp.get("/metrics")
def metrics():
    """Prometheus text format; the numbers are shared by every process (kept in Redis)."""
    body = prometheus.render(get_storage(), current_app.extensions["rq_queue"])
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
