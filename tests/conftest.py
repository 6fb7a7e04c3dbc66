"""Test session: a real redis-server of our own, the Facebook simulator over HTTP, the app.

Redis is started by the session (never the machine's shared 6379) and flushed before each
test. The simulator is `sandbox.SandboxServer` in a process of its own (`SandboxProcess`, so
that this process's pauses never bunch its answers) on a free port; the app is served over real
HTTP too when a test needs Facebook to post webhooks to it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis as redis_lib
import requests
from rq import SimpleWorker

from bot.app import create_app
from bot.config import Settings
from bot.refs import OptinRefs
from bot.signature import WebhookSignature
from jobs.job import job_class
from sandbox.client import SandboxControl
from sandbox.process import SandboxProcess
from storage.embedded import EmbeddedRedis, free_port
from tests.live import Gunicorn, LiveServer, start_gunicorn

FIXTURES = Path(__file__).parent / "fixtures"
pytest_plugins = ["tests.run_fixtures"]  # page, profile, opted_in, program: node-run fixtures
APP_SECRET = "test-app-secret"
API_TOKEN = "test-api-token"
VERIFY_TOKEN = "test-verify-token"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False, use_socket=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_lib.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="module")
def http():
    """A plain HTTP client, for calling a server as any other client would."""
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="session")
def sandbox_server():
    with SandboxProcess(app_secret=APP_SECRET) as server:
        yield server


@pytest.fixture
def fb(sandbox_server) -> SandboxControl:
    """The Facebook simulator's control API, reset for each test."""
    control = SandboxControl(sandbox_server.url)
    control.reset()
    yield control
    control.close()


def service_env(redis_url: str, graph_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a test app or worker process."""
    return {
        "REDIS_URL": redis_url,
        "SANDBOX": "0",
        "SECRET_KEY": "test-secret-key",
        "API_TOKEN": API_TOKEN,
        "ADMIN_PASSWORD": "test-admin",
        "FB_APP_ID": "100000000000001",
        "FB_APP_SECRET": APP_SECRET,
        "FB_VERIFY_TOKEN": VERIFY_TOKEN,
        "TOKEN_ENCRYPTION_KEY": "q8d5wH4bPZ0bV1N6oQ0m0c2u4nJkK9m1XG2b4B2l3bA=",
        "GRAPH_API_URL": graph_url,
        "FB_LOGIN_URL": graph_url,
        "LOG_LEVEL": "WARNING",
        "SEND_MAX_ATTEMPTS": "3",
        **overrides,
    }


def make_settings(redis_url: str, graph_url: str, **overrides: str) -> Settings:
    return Settings.from_env(service_env(redis_url, graph_url, **overrides), dotenv=False)


@pytest.fixture
def settings_overrides() -> dict[str, str]:
    """Override in a test module to change the app's settings."""
    return {}


@pytest.fixture
def settings(redis_client, redis_server, sandbox_server, settings_overrides) -> Settings:
    return make_settings(redis_server.url, sandbox_server.url, **settings_overrides)


@pytest.fixture
def app(settings):
    application = create_app(settings)
    yield application
    application.extensions["graph"].close()
    application.extensions["storage"].redis.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return app.extensions["storage"]


@pytest.fixture
def api(client):
    """Call the JSON API with the bearer token: api("post", "/profiles", json=...)."""

    def call(method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {API_TOKEN}", **kwargs.pop("headers", {})}
        return client.open(f"/api/v1{path}", method=method.upper(), headers=headers, **kwargs)

    return call


@pytest.fixture
def live_app(app, fb):
    """The app over real HTTP, with the simulator posting its webhooks to it."""
    with LiveServer(app) as server:
        fb.configure(webhook_url=f"{server.url}/webhook")
        yield server
        fb.reset()  # drop receipts still scheduled for this server


@pytest.fixture
def refs(settings) -> OptinRefs:
    return OptinRefs(settings.secret_key)


@pytest.fixture
def signer() -> WebhookSignature:
    return WebhookSignature(APP_SECRET)


@pytest.fixture
def post_webhook(client, signer) -> Callable:
    """POST a payload (dict or bytes) to /webhook signed like Facebook does."""

    def post(payload, signature: str | None = None, **headers):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sig = signer.sign(body) if signature is None else signature
        return client.post(
            "/webhook",
            data=body,
            headers={"X-Hub-Signature-256": sig, "Content-Type": "application/json", **headers},
        )

    return post


def load_webhook(name: str, **values: object) -> dict:
    """A fixture payload with {PLACEHOLDERS} filled in (ids stay strings, times numbers)."""
    text = (FIXTURES / "webhooks" / f"{name}.json").read_text()
    for key, value in values.items():
        text = text.replace("{" + key.upper() + "}", str(value))
    return json.loads(text)


def wait_until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.01):
    """Poll until `condition()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def drain(app):
    """Run every queued job in this process (RQ SimpleWorker, burst mode), as a worker would."""
    queues = [app.extensions["rq_queue"], app.extensions["rq_maintenance"]]

    def run() -> None:
        SimpleWorker(queues, connection=queues[0].connection, job_class=job_class(app)).work(
            burst=True, logging_level="WARNING"
        )

    return run


CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright (never a downloaded browser build)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-sync",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def page_in_browser(browser):
    """A fresh browser context (cookies, clipboard permission) and page."""
    ARTIFACTS.mkdir(exist_ok=True)
    context_ = browser.new_context(
        permissions=["clipboard-read", "clipboard-write"], viewport={"width": 1200, "height": 900}
    )
    page = context_.new_page()
    page.set_default_timeout(10_000)
    yield page
    context_.close()


@pytest.fixture
def gunicorn(redis_server, sandbox_server, redis_client, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        **service_env(redis_server.url, sandbox_server.url),
        "PORT": str(port),
        "WEB_CONCURRENCY": "3",
        "ACCESS_LOG": "",
    }
    process = start_gunicorn(env, tmp_path / "gunicorn.log")
    url = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError((tmp_path / "gunicorn.log").read_text())
        try:
            return requests.get(f"{url}/healthz", timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # refused, or workers still booting
            return False

    try:  # stopped even when it never came up, so no gunicorn outlives the test
        wait_until(up, timeout=30)
        yield Gunicorn(process, url, env)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def messenger_node(profile_id: str, **fields: object) -> dict:
    """A valid Messenger node `n1` sending "Hi" (any field overridden by `fields`)."""
    return {
        "id": "n1",
        "type": "messenger",
        "profile_id": profile_id,
        "tag": "ACCOUNT_UPDATE",
        "message": "Hi",
        **fields,
    }
