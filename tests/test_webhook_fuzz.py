"""Bad input at the webhook, generated: never a 5xx, never a change without a valid signature
and a well-formed page event; and a recorded burst replayed three times counts once. Against
real gunicorn: malformed chunked bodies get 400 and oversized ones 413, each with
`Connection: close` and nothing logged as an error."""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import time
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.stats import day_of
from tests.test_web_processes import message, post
from tests.test_webhook import snapshot

PAGE = "104857600000001"
CASES: list[str] = []

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64),
    st.floats(allow_nan=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
kinds = st.sampled_from(
    [
        "optin",
        "message",
        "delivery",
        "read",
        "postback",
        "referral",
        "reaction",
        "policy_enforcement",
        "standby",
        "game_play",
    ]
)
events = st.fixed_dictionaries(
    {
        "sender": st.one_of(
            st.fixed_dictionaries({"id": st.one_of(st.text(max_size=20), st.integers())}),
            json_values,
        ),
        "timestamp": st.one_of(st.integers(0, 2**45), json_values),
    },
    optional={"recipient": json_values},
).flatmap(lambda base: st.tuples(kinds, json_values).map(lambda kv: {**base, kv[0]: kv[1]}))
envelopes = st.fixed_dictionaries(
    {
        "object": st.one_of(st.just("page"), st.text(max_size=10), json_values),
        "entry": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "id": st.one_of(st.just(PAGE), st.text(max_size=16), st.integers()),
                        "time": st.integers(0, 2**45),
                        "messaging": st.one_of(st.lists(events, max_size=5), json_values),
                    }
                ),
                max_size=4,
            ),
            json_values,
        ),
    }
)
bodies = st.one_of(
    envelopes.map(lambda e: json.dumps(e).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
)


@pytest.fixture
def profile(store):
    return store.profiles.create(name="Fuzz", page_id=PAGE, page_name="Fuzz", page_token="t")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, signing=st.sampled_from(["valid", "forged", "missing", "other-body"]))
def test_webhook_never_fails_and_changes_nothing_unless_signed_and_well_formed(
    client, signer, redis_client, profile, body, signing
):
    CASES.append(signing)
    header = {
        "valid": signer.sign(body),
        "forged": "sha256=" + "ab" * 32,
        "missing": None,
        "other-body": signer.sign(body + b" "),
    }[signing]
    before = snapshot(redis_client)
    answer = client.post(
        "/webhook", data=body, headers={"X-Hub-Signature-256": header} if header else {}
    )
    assert answer.status_code in (200, 400, 403, 413)
    if signing != "valid":
        assert answer.status_code == 403 and snapshot(redis_client) == before
    elif answer.status_code != 200:
        assert snapshot(redis_client) == before


def test_fuzz_case_count_is_reported():
    """The number of generated webhook cases of the test above (printed with -s, kept in the
    note)."""
    kinds = ", ".join(f"{k} {CASES.count(k)}" for k in sorted(set(CASES)))
    print(f"\nwebhook fuzz: {len(CASES)} cases ({kinds})")
    assert len(CASES) >= 300


def test_huge_bodies_are_refused_before_parsing(client, signer, redis_client, profile):
    body = b'{"object":"page","entry":[' + b'{"id":"1"},' * 200_000 + b'{"id":"1"}]}'
    before = snapshot(redis_client)
    assert (
        client.post(
            "/webhook", data=body, headers={"X-Hub-Signature-256": signer.sign(body)}
        ).status_code
        == 413
    )
    assert snapshot(redis_client) == before


def test_a_recorded_burst_replayed_three_times_in_random_order_counts_each_event_once(
    client, signer, store, refs, profile
):
    now = int(time.time() * 1000)
    for i in range(40):
        store.messages.record_sent(profile.id, f"c{i}", f"p{i}", f"m_{i}", now - 10_000)
    unique: list[dict] = []
    for i in range(40):
        unique.append(
            {
                "sender": {"id": f"p{i}"},
                "recipient": {"id": PAGE},
                "timestamp": now + i,
                "delivery": {"watermark": now, **({"mids": [f"m_{i}"]} if i % 2 else {})},
            }
        )
    for i in range(20):
        unique.append(
            {
                "sender": {"id": f"p{i}"},
                "recipient": {"id": PAGE},
                "timestamp": now + 100 + i,
                "read": {"watermark": now},
            }
        )
    for i in range(15):
        unique.append(
            {
                "sender": {"id": f"new{i}"},
                "recipient": {"id": PAGE},
                "timestamp": now + 200 + i,
                "optin": {"ref": refs.sign(profile.id, f"o{i}")},
            }
        )
    for i in range(25):
        unique.append(
            {
                "sender": {"id": f"chat{i}"},
                "recipient": {"id": PAGE},
                "timestamp": now + 300 + i,
                "message": {"mid": f"m_in{i}", "text": "hello"},
            }
        )
    bodies = [
        json.dumps(
            {"object": "page", "entry": [{"id": PAGE, "time": now, "messaging": [e]}]}
        ).encode()
        for e in unique
    ]
    bodies += [
        json.dumps(
            {
                "object": "page",
                "entry": [{"id": PAGE, "time": now, "messaging": unique[i : i + 10]}],
            }
        ).encode()
        for i in range(0, len(unique), 10)
    ]  # Facebook also batches the same events differently
    replay = bodies * 3
    random.Random(7).shuffle(replay)
    for body in replay:
        assert (
            client.post(
                "/webhook", data=body, headers={"X-Hub-Signature-256": signer.sign(body)}
            ).status_code
            == 200
        )
    counts = store.stats.day(profile.id, day_of(now - 10_000, store.tz))
    assert (counts["sent"], counts["delivered"], counts["read"]) == (40, 40, 20)
    assert (
        len(store.stats.rows(profile.id, day_of(now - 10_000, store.tz), "delivered", count=1000))
        == 40
    )
    assert all(store.contacts.get(f"o{i}") == {profile.optin_field: f"new{i}"} for i in range(15))
    assert [store.inbound.last_seen(profile.id, f"chat{i}") for i in range(25)] == [
        now + 300 + i for i in range(25)
    ]
    assert store.inbound.unmatched(profile.id) == []


# -- malformed and oversized bodies against real gunicorn (raw sockets) ---------------------


class RawAnswer(NamedTuple):
    status: int
    head: str  # status line and headers
    body: bytes
    closed: bool  # the server closed the connection after the answer


def raw_exchange(
    url: str, request: bytes, half_close: bool = False, timeout: float = 10
) -> RawAnswer:
    """Send `request` as raw bytes on a new connection (then half-close it if asked), read one
    answer by its Content-Length, then wait for the server to close the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        # OSError: the server refused the rest of an oversized body: its answer is waiting
        with contextlib.suppress(OSError):
            conn.sendall(request)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        data = b""
        while b"\r\n\r\n" not in data:
            data += _recv(conn)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += _recv(conn)
        try:
            closed = conn.recv(1) == b""
        except ConnectionResetError:  # it closed with part of our oversized body unread
            closed = True
        except TimeoutError:
            closed = False
    return RawAnswer(int(head.split()[1]), head.decode("latin-1"), body, closed)


def _recv(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise AssertionError("the server closed the connection before answering")
    return chunk


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = "".join(
        f"{name}: {value}\r\n" for name, value in {"Host": "localhost", **headers}.items()
    )
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + body


CHUNKED = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
# (name, body after the headers, whether the client then half-closes its side)
MALFORMED_CHUNKED = [
    ("invalid chunk size", b"zz\r\n{}\r\n0\r\n\r\n", False),
    ("chunk without its CRLF", b"2\r\n{}XY0\r\n\r\n", False),
    ("chunk cut short, then half-closed", b'10\r\n{"object"', True),
    ("last chunk without the final CRLF, then half-closed", b"2\r\n{}\r\n0\r\n", True),
    ("invalid chunk extension", b"2;=x\r\n{}\r\n0\r\n\r\n", False),
]


def assert_log_has_no_error(log_path) -> None:
    """Neither our JSON lines nor gunicorn's own log an error or a Traceback."""
    log = log_path.read_text()
    assert not any(mark in log for mark in ("Traceback", '"level": "error"', "[ERROR]")), log


@pytest.mark.slow
def test_malformed_chunked_webhooks_get_400_and_the_connection_closes(gunicorn, tmp_path):
    """gunicorn raises its own errors from wsgi.input.read (InvalidChunkSize, NoMoreData...): each
    is a 400 with a reason and `Connection: close` (the request's framing is lost), never a 500
    with a Traceback in the log; and the server goes on serving."""
    for name, body, half_close in MALFORMED_CHUNKED:
        answer = raw_exchange(
            gunicorn.url, raw_request("POST", "/webhook", CHUNKED, body), half_close
        )
        assert answer.status == 400 and b"could not be read" in answer.body, (name, answer)
        assert "\r\nConnection: close" in answer.head and answer.closed, (name, answer)
    assert post(gunicorn.url, message("777", "1", 1764000000000)) == 200
    assert_log_has_no_error(tmp_path / "gunicorn.log")


@pytest.mark.slow
def test_oversized_webhooks_get_413_with_connection_close_and_the_next_connection_works(
    gunicorn, settings, tmp_path
):
    """A body over WEBHOOK_MAX_BYTES is left unread: the 413 says `Connection: close` and the
    server closes, so a keep-alive client sends its next request on a new connection (with
    `keep-alive` announced, that request was lost on a connection the server dropped)."""
    limit = settings.webhook_max_bytes  # gunicorn's environment gives the same
    by_length = raw_request(
        "POST", "/webhook", {"Content-Length": str(limit + 1)}, b"{" * 1000
    )  # the rest never sent
    piece = b"x" * 65536
    by_chunks = raw_request(
        "POST",
        "/webhook",
        {"Transfer-Encoding": "chunked"},
        b"%x\r\n%s\r\n" % (len(piece), piece) * (limit // len(piece) + 2) + b"0\r\n\r\n",
    )
    for name, request in [
        ("Content-Length over the limit", by_length),
        ("chunked body over the limit", by_chunks),
    ]:
        answer = raw_exchange(gunicorn.url, request)
        assert answer.status == 413 and answer.body == b"request body too large", (name, answer)
        assert "\r\nConnection: close" in answer.head and answer.closed, (name, answer)
        assert post(gunicorn.url, message("777", "1", 1764000000000)) == 200  # on a new connection
    assert_log_has_no_error(tmp_path / "gunicorn.log")
