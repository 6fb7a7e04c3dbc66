"""Flask app factory of the Facebook simulator (Graph API + control API)."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify

from sandbox import control, control_users, graph, login
from sandbox.state import State
from sandbox.webhooks import Runtime


def create_app(state: State | None = None, **config: Any) -> Flask:
    """Build the simulator app; config keys are those of GET /_sandbox/config."""
    if state is None:
        state = State(**config)
    elif config:
        state.configure(config)
    app = Flask(__name__)
    app.json.sort_keys = False  # keep Facebook's field order in answers and logs
    app.url_map.converters["version"] = graph.VersionConverter
    app.extensions["sandbox"] = Runtime(state)
    app.register_blueprint(login.bp)
    app.register_blueprint(graph.bp)
    app.register_blueprint(control.bp)
    app.register_blueprint(control_users.bp)
    app.register_error_handler(404, not_found)
    return app


def not_found(_error: Exception) -> tuple[Response, int]:
    """Answer unknown paths like Graph does, in JSON."""
    body = {"error": {"message": "Unknown path components", "type": "OAuthException", "code": 2500}}
    return jsonify(body), 404
