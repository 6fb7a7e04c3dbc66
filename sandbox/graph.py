"""Graph API endpoints the service calls: /me, /{page-id}, subscribed_apps and messages."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.routing import BaseConverter

from sandbox import sends, tokens
from sandbox.errors import GraphError, fault_error, take_fault
from sandbox.webhooks import Runtime

# Set by our server (sandbox/server.py): when the request's first byte was read, and the time
# before which its answer is held back (time.monotonic()).
ARRIVED, ANSWER_AT = "sandbox.arrived", "sandbox.answer_at"

bp = Blueprint("graph", __name__)
APP_NAME = "Sandbox app"
PAGE_FIELDS = ("id", "name")
USER_FIELDS = ("id", "name")


class VersionConverter(BaseConverter):
    """Match a Graph API version segment such as v26.0."""

    regex = r"v\d+\.\d+"


def runtime() -> Runtime:
    """Return the simulator runtime of the current app."""
    return current_app.extensions["sandbox"]


def params() -> dict[str, Any]:
    """Merge query, form and JSON parameters the way Graph accepts them."""
    merged: dict[str, Any] = dict(request.args.items())
    merged.update(request.form.items())
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict):
        merged.update(body)
    return merged


def token(values: dict[str, Any]) -> str | None:
    """Return the access token from the Authorization header or the parameters."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return values.get("access_token")


def authorise(page_ref: str, values: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """Return the page the token belongs to, or raise 190 (bad token) / 100-33 (other page)."""
    state = runtime().state
    page, _known = state.page_for_token(token(values))
    if page is None:
        raise tokens.page_token_error(state, token(values))
    g.sandbox_page_id = page["id"]
    if page_ref not in ("me", page["id"]):
        raise GraphError(
            100,
            f"Unsupported {request.method.lower()} request. Object with ID "
            f"'{page_ref}' does not exist, cannot be loaded due to missing "
            "permissions, or does not support this operation",
            33,
        )
    fault = take_fault(state, endpoint, page["id"], None) if endpoint != "messages" else None
    if fault is not None:
        raise fault_error(fault)
    return page


@bp.errorhandler(GraphError)
def graph_error(err: GraphError) -> Response:
    """Render a refusal as Facebook's error JSON."""
    return err.response()


@bp.after_request
def usage_header(response: Response) -> Response:
    """Add X-Business-Use-Case-Usage when the page has a simulated quota use."""
    page_id = g.get("sandbox_page_id")
    page = runtime().state.page(page_id) if page_id else None
    if page and page["usage_percent"] is not None:
        pct = page["usage_percent"]
        usage = {
            page_id: [
                {
                    "type": "messenger",
                    "call_count": pct,
                    "total_cputime": pct,
                    "total_time": pct,
                    "estimated_time_to_regain_access": page["regain_minutes"],
                }
            ]
        }
        response.headers["X-Business-Use-Case-Usage"] = json.dumps(usage)
    return response


@bp.get("/<version:version>/me")
def read_me(version: str) -> Response:
    """Answer GET /me with the Page (Page token) or the person (user token from Login)."""
    values = params()
    if tokens.is_user_token(runtime().state, token(values)):
        return read_user(values)
    page = authorise("me", values, "me")
    return jsonify(id=page["id"], name=page["name"])


def read_user(values: dict[str, Any]) -> Response:
    """Answer GET /me?fields=id,name for a user token."""
    user = tokens.user_for_token(runtime().state, token(values))
    return jsonify({field: user[field] for field in requested_fields(values, USER_FIELDS, "User")})


@bp.get("/<version:version>/<page_ref>")
def read_page(version: str, page_ref: str) -> Response:
    """Answer GET /{page-id}?fields=id,name."""
    values = params()
    page = authorise(page_ref, values, "page")
    return jsonify({field: page[field] for field in requested_fields(values, PAGE_FIELDS, "Page")})


def requested_fields(values: dict[str, Any], known: tuple[str, ...], node_type: str) -> list[str]:
    """The `fields` asked for (id,name by default); an unknown one is refused as Graph does."""
    fields = [f.strip() for f in values.get("fields", "id,name").split(",") if f.strip()]
    for field in fields:
        if field not in known:
            raise GraphError(
                100,
                f"(#100) Tried accessing nonexisting field ({field}) on node type ({node_type})",
            )
    return fields


@bp.route("/<version:version>/<page_ref>/subscribed_apps", methods=["GET", "POST", "DELETE"])
def subscribed_apps(version: str, page_ref: str) -> Response:
    """List, set or clear the app's webhook subscription on the Page."""
    values = params()
    page = authorise(page_ref, values, "subscribed_apps")
    state = runtime().state
    if request.method == "GET":
        with state.lock:
            fields = list(page["subscribed_fields"])
        data = (
            [{"id": state.cfg("app_id"), "name": APP_NAME, "subscribed_fields": fields}]
            if fields
            else []
        )
        return jsonify(data=data)
    if request.method == "DELETE":
        with state.lock:
            page["subscribed_fields"] = []
        return jsonify(success=True)
    fields = values.get("subscribed_fields") or ""
    fields = fields if isinstance(fields, list) else str(fields).split(",")
    fields = [f.strip() for f in fields if f.strip()]
    if not fields:
        raise GraphError(100, "(#100) Param subscribed_fields must be non-empty")
    with state.lock:
        page["subscribed_fields"] = fields
    return jsonify(success=True)


def send_params() -> dict[str, Any]:
    """Return the send parameters, decoding recipient/message sent as form JSON strings."""
    values = params()
    for key in ("recipient", "message"):
        if isinstance(values.get(key), str):
            try:
                values[key] = json.loads(values[key])
            except ValueError as exc:
                raise GraphError(100, f"(#100) param {key} must be JSON") from exc
    return values


def log_entry(page_ref: str, values: dict[str, Any]) -> dict[str, Any]:
    """Start the sends-log record of one /messages request."""
    message = values.get("message") if isinstance(values.get("message"), dict) else {}
    recipient = values.get("recipient") if isinstance(values.get("recipient"), dict) else {}
    return {
        "page_id": page_ref,
        "recipient": recipient,
        "messaging_type": values.get("messaging_type"),
        "tag": values.get("tag"),
        "text": message.get("text"),
        "template": message.get("template"),
        # Meta documents metadata inside `message`; accept it at the top level too.
        "metadata": message.get("metadata", values.get("metadata")),
        "received_ms": runtime().state.now_ms(),
        "status": None,
    }


@bp.post("/<version:version>/<page_ref>/messages")
def send_message(version: str, page_ref: str) -> Response:
    """Run Facebook's Send API checks, log the outcome and answer like Facebook."""
    rt = runtime()
    arrived = request.environ.get(ARRIVED, time.monotonic())
    entry = log_entry(page_ref, {})
    try:
        values = send_params()
        entry = log_entry(page_ref, values)
        page = authorise(page_ref, values, "messages")
        entry["page_id"] = page["id"]
        answer = jsonify(checked_send(rt, page, values, entry))
    except GraphError as err:
        if entry["status"] is None:
            entry.update(status="refused", error=err.summary())
            rt.state.log_send(entry)
        answer = err.response()
    answer_after_latency(rt, arrived)
    return answer


def answer_after_latency(rt: Runtime, arrived: float) -> None:
    """Answer `latency_ms` after the request arrived, our own work included, as Facebook's
    latency is."""
    hold_answer(arrived + int(rt.state.cfg("latency_ms")) / 1000)


def hold_answer(until: float) -> None:
    """Answer no earlier than `until` (time.monotonic()). Our server holds the answer back on
    its event loop, so a waiting answer costs no thread; any other server sleeps here."""
    if ANSWER_AT in request.environ:
        request.environ[ANSWER_AT] = max(request.environ[ANSWER_AT], until)
    elif (remaining := until - time.monotonic()) > 0:
        time.sleep(remaining)


def checked_send(
    rt: Runtime, page: dict[str, Any], values: dict[str, Any], entry: dict[str, Any]
) -> dict[str, Any]:
    """Apply rate limit, faults and validation; return the success body or raise."""
    limit = rt.state.cfg("page_rate_limit")
    if limit is not None and rt.state.count_call(page["id"], int(time.time())) > limit:
        raise GraphError(613, "(#613) Calls to this api have exceeded the rate limit.", 2534040)
    recipient = entry["recipient"].get("id") or entry["recipient"].get("user_ref")
    fault = take_fault(rt.state, "messages", page["id"], str(recipient) if recipient else None)
    if fault is not None:
        entry["fault_id"] = fault["id"]
    if fault is not None and not fault["accept"]:
        delay_answer_ms(fault["delay_ms"])
        raise fault_error(fault)
    target = sends.validate(rt.state, page, values)
    body = sends.accept(rt, page["id"], target, entry)
    if fault is not None:
        # Facebook sent it but the caller never hears so: an ambiguous outcome.
        delay_answer_ms(fault["delay_ms"])
        with rt.state.lock:
            entry["answered_error"] = fault_error(fault).summary()
        raise fault_error(fault)
    return body


def delay_answer_ms(delay_ms: int | None) -> None:
    """A fault's delay, if any: the answer comes that much later."""
    if delay_ms:
        hold_answer(time.monotonic() + delay_ms / 1000)
