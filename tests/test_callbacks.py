"""Run callbacks: once every contact of a run has its outcome, its summary is posted, signed, to
the run's callback_url; retried with backoff when the engine fails, at most once successfully.

Runs go through the API, RQ (drained in this process), the real Redis and the simulator; the
program engine is a small HTTP(S) server in this process that records what it receives and
answers what the test tells it. Time is moved by the jobs' `now_ms`, never by sleeping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot import callbacks as rules
from bot.runs import accept_run
from jobs.callbacks import LEASE_MS, queue_callbacks, send_callback
from jobs.ticker import Ticker, default_tasks
from storage import keys
from storage.callbacks import CallbackRun, Callbacks
from tests.run_fixtures import now_ms, outcomes, start_run

SECRET = "test-callback-secret"
DAY_MS = 86_400_000


@pytest.fixture
def settings_overrides() -> dict[str, str]:
    """Sandbox mode: a plain-HTTP engine on 127.0.0.1 is allowed (CALLBACK_ALLOW_PRIVATE=1)."""
    return {"SANDBOX": "1", "CALLBACK_SECRET": SECRET}


# -- the program engine stand-in -------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Engine:
    url: str
    answers: list[int] = field(default_factory=list)  # statuses to answer, in turn; then 200
    received: list[Received] = field(default_factory=list)


def serve_engine(tls: ssl.SSLContext | None = None) -> Iterator[Engine]:
    engine = Engine(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            engine.received.append(
                Received(self.path, dict(self.headers.items()), self.rfile.read(length))
            )
            status = engine.answers.pop(0) if engine.answers else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme, host = ("https", "localhost") if tls else ("http", "127.0.0.1")
    engine.url = f"{scheme}://{host}:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def engine() -> Iterator[Engine]:
    yield from serve_engine()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "engine.pem", directory / "engine.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# -- helpers ---------------------------------------------------------------------------------


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def run_with_callback(api, drain, contacts, url: str, **kwargs) -> str:
    body = {"contacts": [{"id": c} for c in contacts], "callback_url": url, **kwargs}
    answer = api("post", "/programs/p1/nodes/n1/runs", json=body)
    assert answer.status_code == 202, answer.get_json()
    drain()
    return answer.get_json()["run_id"]


def tick(app, now: int | None = None) -> int:
    """The periodic task, as the ticker runs it."""
    with app.app_context():
        return queue_callbacks(now)


def callback_state(store, run_id: str):
    return Callbacks(store.redis).state(run_id)


def expected_reasons(api, run_id: str) -> dict[str, dict[str, int]]:
    reasons: dict[str, dict[str, int]] = {"warning": {}, "failed": {}}
    for contact in outcomes(api, run_id).values():
        if contact["outcome"] in reasons:
            kind = reasons[contact["outcome"]]
            kind[contact["reason_code"]] = kind.get(contact["reason_code"], 0) + 1
    return reasons


# -- delivery --------------------------------------------------------------------------------


def test_the_summary_arrives_signed_once_every_contact_has_its_outcome(
    app, api, drain, fb, store, program, opted_in, engine
):
    program()
    opted_in("c1", FIRSTNAME="Ann", ORDER_ID="1")
    psid = opted_in("c2", ORDER_ID="2")
    fb.add_fault(recipient=psid, code=100, subcode=2018001, message="No matching user found")
    store.contacts.merge_many({"c3": {"ORDER_ID": "3"}})  # known, never opted in: a warning
    run_id = run_with_callback(
        api, drain, ["c1", "c2", "c3", "c4"], f"{engine.url}/hooks/run?key=k1", run_id="r-42"
    )
    assert engine.received == []  # nothing is posted before the periodic task finds it due
    assert tick(app) == 1
    drain()

    [got] = engine.received
    assert got.path == "/hooks/run?key=k1"
    assert got.headers["X-Signature-256"] == signed(got.body)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Run-Id"] == "r-42"
    assert got.headers["User-Agent"].startswith("messenger-channel/")
    summary = got.json
    run = api("get", f"/runs/{run_id}").get_json()
    created, done = store.redis.hmget(keys.run(run_id), "created_at", "done_at")
    assert summary == {
        "run_id": "r-42",
        "program_id": "p1",
        "node_id": "n1",
        "profile_id": run_profile(store, run_id),
        "state": "done",
        "total": 4,
        "counts": {"sent": 1, "warning": 2, "failed": 1},
        "reasons": expected_reasons(api, run_id),
        "created_at": iso(created),
        "done_at": iso(done),
    }
    assert run["counts"] == {"sent": 1, "warning": 2, "failed": 1, "pending": 0}
    assert summary["reasons"]["failed"] == {"invalid_recipient": 1}
    assert sum(summary["reasons"]["warning"].values()) == 2

    state = callback_state(store, run_id)
    assert (state.state, state.attempts, state.due_at_ms) == ("delivered", 1, None)
    # Delivered: never posted again, whatever runs later.
    assert tick(app, now_ms() + 10 * DAY_MS) == 0
    drain()
    assert len(engine.received) == 1


def run_profile(store, run_id: str) -> str:
    return store.redis.hget(keys.run(run_id), "profile_id")


def iso(ms: str) -> str:
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).isoformat()


def test_a_500_is_retried_with_backoff_then_delivered_once(
    app, api, drain, store, program, opted_in, engine
):
    program()
    opted_in("c1", ORDER_ID="1")
    engine.answers = [500]
    run_id = run_with_callback(api, drain, ["c1"], f"{engine.url}/hook")
    before = now_ms()
    assert tick(app) == 1
    drain()
    assert len(engine.received) == 1
    state = callback_state(store, run_id)
    assert (state.state, state.attempts, state.error) == ("retrying", 1, "HTTP 500")
    # The first retry comes within 60 s (15-30 s: 30 s of backoff, jittered by up to half).
    assert before + 15_000 <= state.due_at_ms <= now_ms() + 30_000

    assert tick(app, state.due_at_ms - 1) == 0  # not due yet
    assert tick(app, state.due_at_ms) == 1
    drain()
    first, second = engine.received
    assert second.body == first.body  # the same bytes, the same signature at every attempt
    assert second.headers["X-Signature-256"] == signed(second.body)
    assert [r.headers["X-Callback-Attempt"] for r in engine.received] == ["1", "2"]
    state = callback_state(store, run_id)
    assert (state.state, state.attempts, state.error, state.due_at_ms) == (
        "delivered",
        2,
        "",
        None,
    )
    assert tick(app, now_ms() + DAY_MS) == 0
    drain()
    assert len(engine.received) == 2


def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    app, api, drain, store, program, opted_in, engine
):
    program()
    opted_in("c1", ORDER_ID="1")
    engine.answers = [307]
    run_id = run_with_callback(api, drain, ["c1"], f"{engine.url}/hook")
    tick(app)
    drain()
    assert [r.path for r in engine.received] == ["/hook"]
    assert callback_state(store, run_id).error == "HTTP 307"


def test_an_engine_that_cannot_be_reached_is_retried(app, store, api, drain, program, opted_in):
    program()
    opted_in("c1", ORDER_ID="1")
    run_id = run_with_callback(api, drain, ["c1"], "http://127.0.0.1:9/hook")  # discard: closed
    tick(app)
    drain()
    state = callback_state(store, run_id)
    assert state.state == "retrying" and state.error.startswith("could not connect")


def test_a_worker_killed_mid_post_leaves_the_callback_to_be_taken_again(
    app, api, drain, store, program, opted_in, engine
):
    program()
    opted_in("c1", ORDER_ID="1")
    run_id = run_with_callback(api, drain, ["c1"], f"{engine.url}/hook")
    t0 = now_ms()
    cb = Callbacks(store.redis)
    [taken], claim = cb.take_due(t0, LEASE_MS)
    assert taken == run_id
    attempt = cb.begin(run_id, claim, t0, LEASE_MS)  # ... and the worker dies here
    assert attempt.status == "go"
    assert tick(app, t0 + LEASE_MS - 1) == 0  # its lease still runs
    with app.app_context():  # the job queued before the crash comes late: it does nothing
        assert send_callback(run_id, claim, t0 + 1000) == "stale"
    assert engine.received == []
    assert tick(app, t0 + LEASE_MS + 1) == 1
    drain()
    assert len(engine.received) == 1
    state = callback_state(store, run_id)
    assert (state.state, state.attempts) == ("delivered", 2)


def test_a_success_is_recorded_once_and_ends_every_other_attempt(
    app, api, drain, store, program, opted_in, engine
):
    program()
    opted_in("c1", ORDER_ID="1")
    run_id = run_with_callback(api, drain, ["c1"], f"{engine.url}/hook")
    t0 = now_ms()
    cb = Callbacks(store.redis)
    _, claim = cb.take_due(t0, LEASE_MS)
    first = cb.begin(run_id, claim, t0, LEASE_MS)
    assert cb.begin(run_id, claim, t0, LEASE_MS).status == "stale"  # two workers, one claim
    # The first's lease lapses; a second attempt takes over and gets its 2xx first.
    _, late_claim = cb.take_due(t0 + LEASE_MS + 1, LEASE_MS)
    second = cb.begin(run_id, late_claim, t0 + LEASE_MS + 1, LEASE_MS)
    assert second.status == "go" and second.number == 2
    assert cb.delivered(run_id, second.claim, t0 + LEASE_MS + 2)
    assert not cb.delivered(run_id, first.claim, t0 + LEASE_MS + 3)  # recorded once
    assert not cb.retry(run_id, first.claim, t0, t0 + 1, "late failure")
    assert callback_state(store, run_id).delivered_at_ms == t0 + LEASE_MS + 2
    assert cb.due() == []
    with app.app_context():
        assert send_callback(run_id, late_claim, t0 + LEASE_MS + 4) == "delivered"
    assert engine.received == []


def test_the_engine_failing_for_a_day_gives_the_callback_up(
    app, api, drain, store, program, opted_in, engine, caplog
):
    program()
    opted_in("c1", ORDER_ID="1")
    engine.answers = [500] * 3
    run_id = run_with_callback(api, drain, ["c1"], f"{engine.url}/hook")
    done_at = int(store.redis.hget(keys.run(run_id), "done_at"))
    cb = Callbacks(store.redis)
    _, claim = cb.take_due(done_at, LEASE_MS)
    with app.app_context():
        # 40 s before the day is over: the next attempt (15-30 s later) is still within it ...
        assert send_callback(run_id, claim, done_at + DAY_MS - 40_000) == "retry"
        late = cb.due()[0][1]
        _, claim = cb.take_due(late, LEASE_MS)
        # ... and the one after it (30-60 s later) would not be
        assert send_callback(run_id, claim, late) == "given up"
    state = callback_state(store, run_id)
    assert (state.state, state.attempts, state.error, state.due_at_ms) == (
        "failed",
        2,
        "HTTP 500",
        None,
    )
    assert "given up after 2 attempts" in caplog.text
    assert engine.url not in caplog.text  # the host only: a URL may carry the engine's token
    assert tick(app, late + DAY_MS) == 0


def test_a_run_of_no_contacts_is_done_at_once_and_told(app, store, drain, program, engine):
    program()
    with app.app_context():
        run, created = accept_run("p1", "n1", {}, "empty", callback_url=f"{engine.url}/hook")
    assert created and run.state == "done" and run.batches == 0
    assert [run_id for run_id, _ in Callbacks(store.redis).due()] == ["empty"]
    assert tick(app) == 1
    drain()
    [got] = engine.received
    assert got.json["counts"] == {"sent": 0, "warning": 0, "failed": 0}
    assert got.json["total"] == 0
    assert got.json["done_at"] == got.json["created_at"]
    assert got.json["reasons"] == {"warning": {}, "failed": {}}


def test_a_repeated_run_id_keeps_its_first_callback_url(api, drain, store, program, opted_in):
    program()
    opted_in("c1", ORDER_ID="1")
    first = start_run(api, ["c1"], run_id="r1")
    assert first.status_code == 202
    again = api(
        "post",
        "/programs/p1/nodes/n1/runs",
        json={"run_id": "r1", "contacts": [{"id": "c1"}], "callback_url": "http://127.0.0.1:1/"},
    )
    assert again.status_code == 202 and again.get_json()["created"] is False
    assert store.runs.get("r1").callback_url == ""
    drain()
    assert Callbacks(store.redis).due() == []  # done, but it never asked for a callback


def test_the_ticker_moves_due_callbacks_to_the_queue(app, store, program, engine):
    program()
    with app.app_context():
        accept_run("p1", "n1", {}, "empty", callback_url=f"{engine.url}/hook")
    tasks = [t for t in default_tasks(app) if t.name == "queue_callbacks"]
    assert [t.every_s <= 5 for t in tasks] == [True]
    assert Ticker(app, tasks).tick() == ["queue_callbacks"]
    queued = app.extensions["rq_maintenance"].jobs
    assert [(j.func_name, j.args[0]) for j in queued] == [("jobs.callbacks.send_callback", "empty")]
    assert Callbacks(store.redis).due()[0][1] > now_ms()  # claimed for the job's lease


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_engine(tmp_path) -> Iterator[tuple[Engine, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for engine in serve_engine(context):
        yield engine, cert


LIVE_PRIVATE = {"CALLBACK_SECRET": SECRET, "CALLBACK_ALLOW_PRIVATE": "1"}


@pytest.mark.parametrize("settings_overrides", [LIVE_PRIVATE])
def test_outside_sandbox_https_is_verified_against_the_configured_trust_store(
    app, api, drain, store, program, opted_in, tls_engine, monkeypatch, settings_overrides
):
    engine, cert = tls_engine
    program()
    opted_in("c1", ORDER_ID="1")
    # certifi does not know the engine's certificate: refused, retried
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    run_id = run_with_callback(api, drain, ["c1"], f"{engine.url}/hook")
    tick(app)
    drain()
    state = callback_state(store, run_id)
    assert (state.state, state.error) == ("retrying", "request failed (SSLError)")
    assert engine.received == []
    # REQUESTS_CA_BUNDLE trusts it, as it would for the Graph client
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    assert tick(app, state.due_at_ms) == 1
    drain()
    [got] = engine.received
    assert got.headers["X-Signature-256"] == signed(got.body)
    assert got.headers["Host"] == engine.url.removeprefix("https://")
    assert callback_state(store, run_id).state == "delivered"


# -- refused callback URLs ---------------------------------------------------------------------


LIVE = {"CALLBACK_SECRET": SECRET}


@pytest.mark.parametrize("settings_overrides", [LIVE])
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://93.184.216.34/hook", "must be an https:// URL"),
        ("ftp://93.184.216.34/hook", "must be an https:// URL"),
        ("https://127.0.0.1/hook", "private, loopback or link-local"),
        ("https://localhost:8443/hook", "private, loopback or link-local"),
        ("https://10.1.2.3/hook", "private, loopback or link-local"),
        ("https://169.254.169.254/latest", "private, loopback or link-local"),
        ("https://[::1]/hook", "private, loopback or link-local"),
        ("https://[::ffff:192.168.0.1]/hook", "private, loopback or link-local"),
        ("https://user:pw@93.184.216.34/hook", "user name or password"),
        ("https:///hook", "must name a host"),
        ("https://93.184.216.34:99999/", "not a valid URL"),
        ("https://93.184.216.34/a b", "without spaces"),
        ("https://" + "a" * 2000, "Length must be between 1 and 2000"),
    ],
)
def test_a_callback_url_the_rules_refuse_gets_422_naming_it(
    api, store, url, why, settings_overrides
):
    answer = api(
        "post", "/programs/p1/nodes/n1/runs", json={"contacts": [{"id": "c1"}], "callback_url": url}
    )
    assert answer.status_code == 422
    [message] = answer.get_json()["error"]["details"]["fields"]["callback_url"]
    assert why in message
    assert store.redis.keys("*run*") == []


@pytest.mark.parametrize("settings_overrides", [LIVE])
def test_a_public_https_url_passes_the_rules(api, settings_overrides):
    answer = api(
        "post",
        "/programs/p1/nodes/n1/runs",
        json={"contacts": [{"id": "c1"}], "callback_url": "https://93.184.216.34/hook?k=1"},
    )
    assert answer.status_code == 404  # past the URL's rules: the program is what is missing


@pytest.mark.parametrize("settings_overrides", [{}])
def test_outside_sandbox_a_callback_needs_callback_secret(api, settings_overrides):
    answer = api(
        "post",
        "/programs/p1/nodes/n1/runs",
        json={"contacts": [{"id": "c1"}], "callback_url": "https://93.184.216.34/hook"},
    )
    assert answer.status_code == 422
    [message] = answer.get_json()["error"]["details"]["fields"]["callback_url"]
    assert "CALLBACK_SECRET" in message


def test_sandbox_mode_allows_plain_http_and_private_addresses(app):
    settings = app.config["SETTINGS"]
    assert settings.sandbox and settings.callback_allow_private
    assert rules.url_problem("http://127.0.0.1:8080/hook", settings) is None


# -- the rules, one by one ---------------------------------------------------------------------


def test_a_post_to_a_private_address_is_refused_at_delivery_too(engine):
    delivery = rules.post(engine.url, b"{}", {}, https_only=False, allow_private=False)
    assert not delivery.ok and "private, loopback or link-local" in delivery.error
    assert engine.received == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # cloud metadata
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.216.34", True),
    ],
)
def test_which_addresses_are_public(address, public):
    assert rules.is_public(address) is public


def test_the_backoff_starts_within_a_minute_is_capped_and_stops_after_a_day():
    done = 1_000_000
    assert rules.next_attempt_ms(1, done, done, jitter=lambda: 0.0) == done + 15_000
    assert rules.next_attempt_ms(1, done, done, jitter=lambda: 1.0) == done + 30_000
    assert rules.next_attempt_ms(2, done, done, jitter=lambda: 1.0) == done + 60_000
    assert rules.next_attempt_ms(30, done, done, jitter=lambda: 1.0) == done + 3_600_000
    late = done + DAY_MS - 3_600_000
    assert rules.next_attempt_ms(30, late, done, jitter=lambda: 1.0) == done + DAY_MS
    assert rules.next_attempt_ms(30, late + 1, done, jitter=lambda: 1.0) is None


def test_the_signature_is_the_hmac_of_the_exact_body():
    run = CallbackRun(
        run_id="r1",
        program_id="p1",
        node_id="n1",
        profile_id="1",
        url="https://engine.example/hook",
        total=3,
        counts={"sent": 1, "warning": 1, "failed": 1},
        reasons={"warning": {"no_optin": 1}, "failed": {"token_invalid": 1}},
        created_at_ms=1_767_225_600_000,
        done_at_ms=1_767_225_660_500,
    )
    body = rules.body(run)
    headers = rules.headers("r1", body, "s3cret", 1)
    assert headers["X-Signature-256"] == signed(body, "s3cret")
    assert "s3cret" not in json.dumps(headers)
    assert json.loads(body)["done_at"] == "2026-01-01T00:01:00.500000+00:00"
