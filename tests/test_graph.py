"""The Graph client against answers the simulator does not give: cut off mid-body."""
from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from bot import graph


def complete(request: bytes) -> bool:
    """Whether `request` holds a whole HTTP request (head and Content-Length bytes of body)."""
    head, found, body = request.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return bool(found) and len(body) >= length


@pytest.fixture
def cut_off_server():
    """Answers every request with a body shorter than its Content-Length, then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # a client that hung up first
                request = b""
                while (chunk := conn.recv(65536)) and not complete(request := request + chunk):
                    pass
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n"
                             b'{"recipient_id": "1", "mess')

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_send_whose_answer_is_cut_off_is_ambiguous_never_resent(cut_off_server):
    client = graph.GraphClient(cut_off_server, "v26.0", app_secret="secret")
    body = {"recipient": {"id": "1"}, "messaging_type": "UPDATE", "message": {"text": "hi"}}
    with pytest.raises(graph.AmbiguousError) as caught:
        client.send("42", "page-token", body)
    assert caught.value.reason == "interrupted"
    assert "page-token" not in str(caught.value)
    client.close()


def test_a_read_whose_answer_is_cut_off_may_be_retried(cut_off_server):
    client = graph.GraphClient(cut_off_server, "v26.0", app_secret="secret")
    with pytest.raises(graph.RetryableError) as caught:
        client.page("42", "page-token")
    assert not isinstance(caught.value, graph.AmbiguousError)
    assert caught.value.reason == "facebook_unavailable"
    client.close()
