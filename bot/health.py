"""Operations endpoints: /healthz (Redis reachable) and /metrics (Prometheus)."""
from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

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
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
