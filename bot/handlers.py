"""Error answers: JSON under /api, short text elsewhere; never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from bot.errors import (
    ApiError,
    Conflict,
    DomainError,
    Expired,
    Forbidden,
    Invalid,
    Malformed,
    NotFound,
    Unavailable,
)

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/facebook/deauthorize", "/facebook/data-deletion"))


def _wants_page() -> bool:
    return not request.path.startswith(("/webhook", "/healthz", "/metrics", "/static/"))


_TITLES = {
    400: "Something was wrong with that request",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}


def _answer(error: ApiError):
    if _wants_json():
        return jsonify(error.body()), error.status
    if _wants_page():
        title = _TITLES.get(error.status, "Something went wrong")
        return render_template("pages/error.html", title=title, message=error.message), error.status
    return error.message, error.status, {"Content-Type": "text/plain; charset=utf-8"}


# The status of each kind of refusal the domain raises (it knows no HTTP).
DOMAIN_STATUS = {
    NotFound: 404,
    Malformed: 400,
    Invalid: 422,
    Conflict: 409,
    Forbidden: 403,
    Expired: 410,
    Unavailable: 502,
}


def http_error_of(error: DomainError) -> ApiError:
    status = next(DOMAIN_STATUS[kind] for kind in type(error).__mro__ if kind in DOMAIN_STATUS)
    return ApiError(status, error.code, error.message, error.details)


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return _answer(error)

    @app.errorhandler(DomainError)
    def domain_error(error: DomainError):
        return _answer(http_error_of(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        message = error.description or error.name
        if error.code == 413:
            message = "The request body is too large"
        code = error.code or 0  # 0: an HTTPException without a status (none of werkzeug's)
        return _answer(ApiError(code or 500, _HTTP_CODES.get(code, "http_error"), message))

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    @app.errorhandler(ReadOnlyError)  # a primary demoted by a failover, still answering
    def storage_down(error: Exception):
        log.error(
            "storage unavailable for %s %s: %s", request.method, request.path, type(error).__name__
        )
        return _answer(ApiError(503, "unavailable", "Storage is unavailable; retry shortly"))

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _answer(
            ApiError(500, "internal_error", "Something went wrong on our side; it has been logged")
        )
