"""The simulator's own control API under /_sandbox/ (JSON, no auth: a local test tool)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from sandbox import users
from sandbox.errors import add_faults
from sandbox.simulate import EventError, build_event
from sandbox.state import ConfigError
from sandbox.webhooks import Runtime

bp = Blueprint("control", __name__, url_prefix="/_sandbox")
SEND_FILTERS = ("page_id", "status", "messaging_type")


class ControlError(Exception):
    """A bad control request, answered as {"error": message}."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@bp.errorhandler(ControlError)
def control_error(err: ControlError) -> tuple[Response, int]:
    """Render a control-API refusal."""
    return jsonify(error=str(err)), err.status


def runtime() -> Runtime:
    """Return the simulator runtime of the current app."""
    return current_app.extensions["sandbox"]


def body() -> dict[str, Any]:
    """Return the JSON object body (empty if none), refusing anything else."""
    data = request.get_json(silent=True) if request.data else {}
    if not isinstance(data, dict):
        raise ControlError("body must be a JSON object")
    return data


def live_page(page_id: str) -> dict[str, Any]:
    """Return the page record or answer 404."""
    page = runtime().state.page(page_id)
    if page is None:
        raise ControlError(f"unknown page {page_id}", 404)
    return page


@bp.post("/reset")
def reset() -> Response:
    """Forget everything but the creation config (or the current one with keep_config)."""
    runtime().reset(keep_config=bool(body().get("keep_config")))
    return jsonify(ok=True)


@bp.route("/config", methods=["GET", "POST"])
def config() -> Response:
    """Read or merge the config; unknown keys are refused."""
    state = runtime().state
    if request.method == "GET":
        with state.lock:
            return jsonify(dict(state.config))
    try:
        return jsonify(state.configure(body()))
    except ConfigError as exc:
        raise ControlError(str(exc)) from exc


def public_page(page: dict[str, Any]) -> dict[str, Any]:
    """Return a page as the control API shows it (templates as a list)."""
    shown = {k: v for k, v in page.items() if k != "templates"}
    shown["templates"] = list(page["templates"].values())
    return shown


@bp.get("/pages")
def list_pages() -> Response:
    """List every page with its token, subscription and templates."""
    state = runtime().state
    with state.lock:
        return jsonify(pages=[public_page(p) for p in state.pages.values()])


@bp.post("/pages")
def create_page() -> tuple[Response, int]:
    """Create a page; id, token and category are generated unless given."""
    data = body()
    try:
        page = runtime().state.add_page(
            str(data.get("name") or "Sandbox Page"),
            data.get("id"),
            data.get("token"),
            data.get("category"),
        )
    except ValueError as exc:
        raise ControlError(str(exc), 409) from exc
    return jsonify(id=page["id"], name=page["name"], token=page["token"]), 201


@bp.get("/pages/<page_id>")
def show_page(page_id: str) -> Response:
    """Show one page, with its people and user_refs."""
    state = runtime().state
    with state.lock:
        shown = public_page(live_page(page_id))
        shown["people"] = [dict(p) for p in state.people[page_id].values()]
        shown["user_refs"] = {k: dict(v) for k, v in state.user_refs[page_id].items()}
    return jsonify(shown)


@bp.post("/pages/<page_id>/invalidate")
def invalidate_page(page_id: str) -> Response:
    """Invalidate the page token: Graph now answers 190/460 for it."""
    with runtime().state.lock:
        live_page(page_id)
        users.kill_page_token(runtime().state, page_id, 460)
    return jsonify(ok=True)


@bp.post("/pages/<page_id>/unsubscribe")
def unsubscribe_page(page_id: str) -> Response:
    """Drop the app's subscription, as Meta does after an hour of failing webhooks."""
    with runtime().state.lock:
        live_page(page_id)["subscribed_fields"] = []
    return jsonify(ok=True)


@bp.post("/pages/<page_id>/usage")
def set_usage(page_id: str) -> Response:
    """Set the quota percentage reported in X-Business-Use-Case-Usage (null removes it)."""
    data = body()
    with runtime().state.lock:
        page = live_page(page_id)
        page["usage_percent"] = data.get("percent")
        page["regain_minutes"] = int(data.get("regain_minutes") or 0)
    return jsonify(ok=True)


@bp.post("/pages/<page_id>/templates")
def add_template(page_id: str) -> tuple[Response, int]:
    """Register a utility template (APPROVED unless a status is given)."""
    data = body()
    live_page(page_id)
    if not data.get("name") or not data.get("language"):
        raise ControlError("name and language are required")
    template = runtime().state.add_template(
        page_id,
        str(data["name"]),
        str(data["language"]),
        int(data.get("param_count") or 0),
        str(data.get("status") or "APPROVED"),
    )
    return jsonify(template), 201


@bp.post("/pages/<page_id>/people")
def add_person(page_id: str) -> tuple[Response, int]:
    """Create a person of the page (or, given a list, many); null last_interaction_ms: window
    closed."""
    data = request.get_json(silent=True) if request.data else {}
    live_page(page_id)
    if isinstance(data, list):
        return jsonify(people=[_new_person(page_id, item) for item in data]), 201
    return jsonify(_new_person(page_id, body())), 201


def _new_person(page_id: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ControlError("each person must be a JSON object")
    unknown = set(data) - {"psid", "last_interaction_ms", "receipts", "user_ref", "user_id"}
    if unknown:
        raise ControlError(f"unknown keys: {', '.join(sorted(unknown))}")
    try:
        return runtime().state.add_person(page_id, **data)
    except ValueError as exc:
        raise ControlError(str(exc)) from exc


@bp.route("/faults", methods=["GET", "POST", "DELETE"])
def faults() -> Response | tuple[Response, int]:
    """List, add (one rule or a list) or clear fault rules."""
    state = runtime().state
    if request.method == "GET":
        with state.lock:
            return jsonify(faults=[dict(f) for f in state.faults])
    if request.method == "DELETE":
        with state.lock:
            state.faults.clear()
        return jsonify(ok=True)
    data = request.get_json(silent=True)
    rules = data if isinstance(data, list) else [data]
    if not all(isinstance(rule, dict) for rule in rules):
        raise ControlError("a fault is a JSON object (or a list of them)")
    try:
        return jsonify(ids=add_faults(state, rules)), 201
    except ValueError as exc:
        raise ControlError(str(exc)) from exc


@bp.get("/sends")
def list_sends() -> Response:
    """List logged /messages requests, filtered by page_id, recipient, status."""
    wanted = {k: request.args[k] for k in SEND_FILTERS if k in request.args}
    recipient = request.args.get("recipient")
    with runtime().state.lock:
        found = [
            dict(s)
            for s in runtime().state.sends
            if all(s.get(k) == v for k, v in wanted.items())
            and (
                recipient is None
                or recipient in (str(s["recipient"].get("id")), str(s["recipient"].get("user_ref")))
            )
        ]
    return jsonify(sends=found)


@bp.get("/webhooks")
def list_webhooks() -> Response:
    """List webhook delivery attempts, filtered by kind and page_id."""
    wanted = {k: request.args[k] for k in ("kind", "page_id") if k in request.args}
    with runtime().state.lock:
        found = [
            dict(w)
            for w in runtime().state.webhooks
            if all(w.get(k) == v for k, v in wanted.items())
        ]
    return jsonify(webhooks=found)


@bp.get("/rates")
def rates() -> Response:
    """Return accepted sends per wall-clock second for one page (or all pages summed)."""
    page_id = request.args.get("page_id")
    state = runtime().state
    with state.lock:
        tables = [state.rates.get(page_id, {})] if page_id else list(state.rates.values())
        per_second: dict[str, int] = {}
        for table in tables:
            for second, count in table.items():
                per_second[str(second)] = per_second.get(str(second), 0) + count
    return jsonify(per_second=dict(sorted(per_second.items())))


@bp.post("/events/<kind>")
def post_event(kind: str) -> Response:
    """Build an event, post it signed to webhook_url now (retrying), and report the status."""
    rt, data = runtime(), body()
    try:
        payload = build_event(rt.state, kind, data)
    except EventError as exc:
        raise ControlError(str(exc), 404 if "unknown page" in str(exc) else 400) from exc
    status = None
    for _ in range(max(1, int(data.get("repeat") or 1))):
        status = rt.webhooks.deliver_now(kind, payload, data.get("signature"))
    return jsonify(status=status, payload=payload)


@bp.post("/flush")
def flush() -> Response:
    """Post every scheduled echo/receipt now and wait until none is pending."""
    timeout = float(body().get("timeout", 10))
    return jsonify(idle=runtime().scheduler.flush(timeout))


@bp.get("/pending")
def pending() -> Response:
    """Return how many scheduled webhooks are still waiting."""
    return jsonify(pending=runtime().scheduler.pending())
