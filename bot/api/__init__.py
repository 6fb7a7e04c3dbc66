"""The JSON API under /api/v1 (DESIGN.md §9): bearer-token auth, JSON errors only."""

from __future__ import annotations

import hmac
from collections import deque

import orjson
from flask import Blueprint, current_app, request
from marshmallow import Schema, ValidationError

from bot.errors import ApiError, invalid

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def require_bearer_token():
    """Every API call carries `Authorization: Bearer <API_TOKEN>` (except the OpenAPI document)."""
    if request.endpoint == "api.openapi_document":
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expected = current_app.config["SETTINGS"].api_token
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise ApiError(
            401, "unauthorized", "A valid 'Authorization: Bearer <API_TOKEN>' header is required"
        )
    return None


def json_body() -> object:
    """The request's JSON body; 400 if it is not JSON, 422 naming every string in it that holds
    a lone UTF-16 surrogate (`"\\ud800"`: Python's json accepts it, but it is no text to store)."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser's recursion limit
        body = None
    if body is None:
        raise ApiError(
            400,
            "invalid_json",
            "The request body must be a JSON object (with Content-Type: application/json)",
        )
    problems = surrogate_problems(body)
    if problems:
        raise invalid({"fields": problems})
    return body


def load_body(schema: Schema) -> dict:
    """The request's JSON body validated by `schema`; 400 if not JSON, 422 listing each problem."""
    return _loaded(schema, json_body())


def load_args(schema: Schema) -> dict:
    """The query string validated by `schema`; 422 naming each argument that is wrong."""
    return _loaded(schema, request.args.to_dict())


def _loaded(schema: Schema, data: object) -> dict:
    try:
        # any JSON: marshmallow refuses a non-object itself (its stubs want a Mapping)
        return schema.load(data)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise invalid({"fields": exc.messages}) from None


LONE_SURROGATE = "Not valid text: holds a lone UTF-16 surrogate (\\ud800-\\udfff)"


def surrogate_problems(body: object) -> dict:
    """Marshmallow-style `{"contacts": {0: {"fields": {"NAME": [message]}}}}` for every key or
    string value with a lone surrogate; {} when there is none.

    orjson refuses to encode such a string, in C: a 10 000-contact body is checked in about a
    millisecond, and walked only when orjson refused it (it also refuses integers beyond 64
    bits and deep nesting, which the walk lets through)."""
    try:
        orjson.dumps(body)
        return {}
    except orjson.JSONEncodeError:
        pass
    problems: dict = {}
    todo: deque[tuple[tuple, object]] = deque([((), body)])
    while todo:
        path, value = todo.popleft()
        if isinstance(value, str) and not _is_text(value):
            _put(problems, path or ("_schema",), LONE_SURROGATE)
        elif isinstance(value, dict):
            for key, item in value.items():
                if _is_text(key):
                    todo.append(((*path, key), item))
                else:  # named as JSON would escape it, so the answer holds no surrogate either
                    _put(
                        problems,
                        (*path, key.encode("utf-8", "backslashreplace").decode()),
                        LONE_SURROGATE,
                    )
        elif isinstance(value, list):
            todo.extend(((*path, index), item) for index, item in enumerate(value))
    return problems


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _put(problems: dict, path: tuple, message: str) -> None:
    node = problems
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return  # an escaped key that names another key's value: one message there is enough
    node.setdefault(path[-1], [message])


from bot.api import (  # noqa: E402,F401  (routes register on bp)
    contacts,
    openapi,
    profiles,
    programs,
    recoveries,
    runs,
    stats,
)
