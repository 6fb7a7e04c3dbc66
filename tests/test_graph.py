"""The Graph client against what the simulator does not do: answers cut off mid-body, resets,
silence, refused connections, kept-alive connections the server closed, values that cannot go
in a request, an egress proxy, TLS.

A send that may have reached Facebook is ambiguous (never resent); one that certainly did not
is retryable; a read (idempotent) is always safe to retry."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot import graph
from tests.conftest import wait_until

BODY = {"recipient": {"id": "1"}, "messaging_type": "UPDATE", "message": {"text": "hi"}}
PAGE_JSON = b'{"id": "42", "name": "Shop"}'


def complete(request: bytes) -> bool:
    """Whether `request` holds a whole HTTP request (head and Content-Length bytes of body)."""
    head, found, body = request.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return bool(found) and len(body) >= length


class ScriptedServer:
    """A one-connection-at-a-time HTTP server whose `answer(conn, request)` does what the test
    needs, then hangs up; `requests` holds every whole request it read, `closed` counts the
    connections it has closed."""

    def __init__(
        self, answer: Callable[[socket.socket, bytes], None], tls: ssl.SSLContext | None = None
    ) -> None:
        self.answer, self.tls = answer, tls
        self.requests: list[bytes] = []
        self.closed = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                conn = self.tls.wrap_socket(conn, server_side=True) if self.tls else conn
            except OSError:  # the client refused our certificate
                conn.close()
                continue
            with conn, contextlib.suppress(OSError):  # a client that hung up first
                request = b""
                while (chunk := conn.recv(65536)) and not complete(request := request + chunk):
                    pass
                if complete(request):
                    self.requests.append(request)
                    self.answer(conn, request)
            self.closed += 1


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(
        answer: Callable[[socket.socket, bytes], None], tls: ssl.SSLContext | None = None
    ) -> ScriptedServer:
        servers.append(ScriptedServer(answer, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.listener.close()


def cut_off(conn: socket.socket, _request: bytes) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n"
        b'{"recipient_id": "1", "mess'
    )


def reset(conn: socket.socket, _request: bytes) -> None:
    """Hang up with a TCP reset, without a byte of answer."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def json_answer(body: bytes) -> Callable[[socket.socket, bytes], None]:
    """A 200 with `body`, kept alive as far as HTTP/1.1 goes (no Connection: close)."""

    def answer(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    return answer


page_json = json_answer(PAGE_JSON)


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


def test_a_kept_alive_connection_the_server_closed_meanwhile_is_not_used_for_the_next_send(serve):
    """Facebook closes idle kept-alive connections. The next send must go on a new connection
    and succeed, not be written into the closed one and end ambiguous."""
    server = serve(json_answer(b'{"recipient_id": "1", "message_id": "m_1"}'))
    client = client_for(server.url)
    assert client.send("42", "page-token", BODY).message_id == "m_1"
    wait_until(lambda: server.closed == 1)  # the server hung up on the idle connection
    assert client.send("42", "page-token", BODY).message_id == "m_1"
    assert len(server.requests) == 2  # the server reads one request per connection: a new one
    client.close()


def test_a_refused_connection_never_sent_anything_so_a_send_is_retryable():
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}")
    with pytest.raises(graph.RetryableError, match="could not be reached") as caught:
        client.send("42", "page-token", BODY)
    assert not isinstance(caught.value, graph.AmbiguousError)
    client.close()


@pytest.mark.parametrize(
    "token", ["page\r\nX-Injected: 1", "pâge-tøken-€"], ids=["newline", "not-latin-1"]
)
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


def test_an_egress_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(
    serve, monkeypatch
):
    proxy = serve(page_json)
    for name in (
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = client_for("http://graph.facebook.invalid")
    assert client.page("42", "page-token") == {"id": "42", "name": "Shop"}
    assert proxy.requests[0].startswith(b"GET http://graph.facebook.invalid/v26.0/42?")
    client.close()

    monkeypatch.setenv("NO_PROXY", "graph.facebook.invalid")
    bypassing = client_for("http://graph.facebook.invalid")
    with pytest.raises(
        graph.RetryableError, match="could not be reached"
    ):  # .invalid never resolves
        bypassing.page("42", "page-token")
    assert len(proxy.requests) == 1
    bypassing.close()


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the PEM file of its (self-signed) certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graph.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def test_tls_is_verified_against_certifi_or_the_named_ca_bundle(serve, monkeypatch, tmp_path):
    """Facebook is reached over HTTPS: an unknown certificate is refused; a CA bundle named
    in REQUESTS_CA_BUNDLE is trusted."""
    context, cert_file = self_signed_tls(tmp_path)
    server = serve(page_json, tls=context)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    untrusting = client_for(server.url)
    with pytest.raises(graph.RetryableError, match="certificate was not trusted") as caught:
        untrusting.send("42", "page-token", BODY)
    assert not isinstance(
        caught.value, graph.AmbiguousError
    )  # refused at the handshake: never sent
    assert server.requests == []
    untrusting.close()

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_file))
    trusting = client_for(server.url)
    assert trusting.page("42", "page-token") == {"id": "42", "name": "Shop"}
    assert len(server.requests) == 1
    trusting.close()
