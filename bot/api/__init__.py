"""The JSON API under /api/v1 (DESIGN.md §9): bearer-token auth, JSON errors only."""
from __future__ import annotations

import hmac

from flask import Blueprint, current_app, request
from marshmallow import Schema, ValidationError

from bot.errors import ApiError

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def require_bearer_token():
    """Every API call carries `Authorization: Bearer <API_TOKEN>` (except the OpenAPI document)."""
    if request.endpoint == "api.openapi_document":
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expected = current_app.config["SETTINGS"].api_token
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "A valid 'Authorization: Bearer <API_TOKEN>' header is required")
    return None


def load_body(schema: Schema) -> dict:
    """The request's JSON body validated by `schema`; 400 if not JSON, 422 listing each problem."""
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "The request body must be a JSON object "
                                            "(with Content-Type: application/json)")
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise ApiError(422, "validation_failed", "The request is not valid", {"fields": exc.messages}) from None


from bot.api import contacts, openapi, profiles, programs, runs, stats  # noqa: E402,F401  (routes register on bp)
