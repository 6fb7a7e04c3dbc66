"""The Graph client against what the simulator does not do: answers cut off mid-body, resets,
silence, refused connections, values that cannot go in a request, an egress proxy.

A send that may have reached Facebook is ambiguous (never resent); one that certainly did not
is retryable; a read (idempotent) is always safe to retry."""
from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from bot import graph

BODY = {"recipient": {"id": "1"}, "messaging_type": "UPDATE", "message": {"text": "hi"}}
PAGE_JSON = b'{"id": "42", "name": "Shop"}'


def complete(request: bytes) -> bool:
    """Whether `request` holds a whole HTTP request (head and Content-Length bytes of body)."""
    head, found, body = request.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return bool(found) and len(body) >= length


class ScriptedServer:
    """A one-connection-at-a-time HTTP server whose `answer(conn, request)` does what the test
    needs; `requests` holds every whole request it read."""

    def __init__(self, answer: Callable[[socket.socket, bytes], None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # a client that hung up first
                request = b""
                while (chunk := conn.recv(65536)) and not complete(request := request + chunk):
                    pass
                if complete(request):
                    self.requests.append(request)
                    self.answer(conn, request)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket, bytes], None]], ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield lambda answer: servers.append(ScriptedServer(answer)) or servers[-1]
    for server in servers:
        server.listener.close()


def cut_off(conn: socket.socket, _request: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n"
                 b'{"recipient_id": "1", "mess')


def reset(conn: socket.socket, _request: bytes) -> None:
    """Hang up with a TCP reset, without a byte of answer."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def page_json(conn: socket.socket, _request: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(PAGE_JSON), PAGE_JSON))


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts and reads, never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    for conn in held:
        conn.close()
    listener.close()


def client_for(url: str, timeout: float = 10.0) -> graph.GraphClient:
    return graph.GraphClient(url, "v26.0", app_secret="secret", timeout=timeout)


@pytest.mark.parametrize("answer", [cut_off, reset], ids=["cut-off", "reset"])
def test_a_send_whose_answer_is_lost_is_ambiguous_never_resent(serve, answer):
    server = serve(answer)
    client = client_for(server.url)
    with pytest.raises(graph.AmbiguousError) as caught:
        client.send("42", "page-token", BODY)
    assert caught.value.reason == "interrupted"
    assert "page-token" not in str(caught.value)
    assert len(server.requests) == 1  # it did arrive
    client.close()


@pytest.mark.parametrize("answer", [cut_off, reset], ids=["cut-off", "reset"])
def test_a_read_whose_answer_is_lost_may_be_retried(serve, answer):
    client = client_for(serve(answer).url)
    with pytest.raises(graph.RetryableError) as caught:
        client.page("42", "page-token")
    assert not isinstance(caught.value, graph.AmbiguousError)
    assert caught.value.reason == "facebook_unavailable"
    client.close()


def test_a_send_without_an_answer_in_time_is_ambiguous_a_read_retryable(silent_server):
    client = client_for(silent_server, timeout=0.3)
    with pytest.raises(graph.AmbiguousError, match="did not answer in time"):
        client.send("42", "page-token", BODY)
    with pytest.raises(graph.RetryableError) as caught:
        client.page("42", "page-token")
    assert not isinstance(caught.value, graph.AmbiguousError)
    client.close()


def test_a_refused_connection_never_sent_anything_so_a_send_is_retryable():
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}")
    with pytest.raises(graph.RetryableError, match="could not be reached") as caught:
        client.send("42", "page-token", BODY)
    assert not isinstance(caught.value, graph.AmbiguousError)
    client.close()


@pytest.mark.parametrize("token", ["page\r\nX-Injected: 1", "pâge-tøken-€"], ids=["newline", "not-latin-1"])
def test_a_token_that_cannot_go_in_a_header_fails_before_anything_is_sent(serve, token):
    server = serve(page_json)
    client = client_for(server.url)
    with pytest.raises(graph.PermanentError) as caught:
        client.send("42", token, BODY)
    assert caught.value.reason == "invalid_request"
    assert client.page("42", "good-token") == {"id": "42", "name": "Shop"}  # the pool still works
    assert len(server.requests) == 1 and b"good-token" in server.requests[0]
    client.close()


def test_the_token_travels_in_the_authorization_header_never_in_the_url(serve):
    server = serve(page_json)
    client = client_for(server.url)
    client.page("42", "page-token")
    head = server.requests[0].split(b"\r\n\r\n")[0].decode()
    request_line, *headers = head.split("\r\n")
    assert request_line.startswith("GET /v26.0/42?") and "page-token" not in request_line
    assert "appsecret_proof=" in request_line
    assert "Authorization: Bearer page-token" in headers
    client.close()


def test_an_egress_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(serve, monkeypatch):
    proxy = serve(page_json)
    for name in ("http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = client_for("http://graph.facebook.invalid")
    assert client.page("42", "page-token") == {"id": "42", "name": "Shop"}
    assert proxy.requests[0].startswith(b"GET http://graph.facebook.invalid/v26.0/42?")
    client.close()

    monkeypatch.setenv("NO_PROXY", "graph.facebook.invalid")
    bypassing = client_for("http://graph.facebook.invalid")
    with pytest.raises(graph.RetryableError, match="could not be reached"):  # .invalid never resolves
        bypassing.page("42", "page-token")
    assert len(proxy.requests) == 1
    bypassing.close()
