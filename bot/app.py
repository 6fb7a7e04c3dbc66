"""The web application: `create_app(settings=None)` builds everything, nothing happens at import."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider

import storage
from bot import api, facebook_callbacks, handlers, health, logs, metrics, pages, webhook
from bot.config import Settings
from bot.crypto import TokenCipher
from bot.graph import GraphClient
from bot.refs import OptinRefs
from bot.signature import WebhookSignature
from bot.tasks import queue


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app from validated settings (read from the environment by default)."""
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SETTINGS=settings,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_NAME="messenger_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
    )
    app.jinja_env.filters["datetime"] = format_datetime
    app.json = UnsortedJSONProvider(app)
    init_services(app, settings)

    receiver = webhook.WebhookReceiver(
        app.extensions["storage"], app.extensions["signature"], app.extensions["refs"]
    )
    # WSGI middleware as Flask documents it; mypy forbids assigning to a method
    app.wsgi_app = webhook.WebhookFastPath(  # type: ignore[method-assign]
        app.wsgi_app, receiver, settings.webhook_max_bytes
    )
    app.register_blueprint(webhook.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(facebook_callbacks.bp)
    handlers.register(app)

    @app.teardown_request
    def flush_metrics(_error=None):
        metrics.flush(app.extensions["storage"])

    @app.before_request
    def tag_request():
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:16]
        logs.context_id.set(g.request_id)

    return app


class UnsortedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, keeping keys in the order the code builds them."""

    sort_keys = False


def format_datetime(value: datetime | float | None) -> str:
    """A time (an aware datetime, or epoch seconds) as pages show it, in UTC."""
    if not value:
        return ""
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def init_services(app: Flask, settings: Settings) -> None:
    """Storage, the Graph client, signature and ref checkers on `app.extensions`."""
    storage.init_app(app, settings, TokenCipher(settings.token_encryption_keys))
    rq_connection = storage.connect(settings, decode=False)
    app.extensions["rq_queue"] = queue(rq_connection)
    app.extensions["rq_maintenance"] = queue(rq_connection, "maintenance")
    app.extensions["graph"] = GraphClient(
        settings.graph_api_url,
        settings.graph_api_version,
        app_secret=settings.fb_app_secret,
        app_id=settings.fb_app_id,
        timeout=settings.graph_timeout_seconds,
    )
    app.extensions["signature"] = WebhookSignature(settings.fb_app_secret)
    app.extensions["refs"] = OptinRefs(settings.secret_key)
