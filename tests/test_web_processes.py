"""The web process as production runs it: gunicorn with gunicorn.conf.py, several workers.
Each worker listens on its own socket, a second server on the address is refused and a worker
stopping under load refuses no connection; /metrics agrees whichever worker answers; SIGTERM
under load loses nothing acknowledged."""

from __future__ import annotations

import itertools
import json
import re
import signal
import threading
from collections import Counter
from pathlib import Path

import psutil
import pytest
import requests

from bot.signature import WebhookSignature
from tests.conftest import APP_SECRET, wait_until
from tests.live import start_gunicorn

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def listening_sockets(pid: int, port: int) -> list:
    """The sockets of a process listening on `port` (none once it has exited)."""
    try:
        held = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return []
    return [c for c in held if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def post(url: str, payload: dict, session=requests) -> int:
    """POST a signed webhook through `session` (the requests module: a new connection)."""
    body = json.dumps(payload).encode()
    return session.post(
        f"{url}/webhook",
        data=body,
        timeout=10,
        headers={"X-Hub-Signature-256": WebhookSignature(APP_SECRET).sign(body)},
    ).status_code


def message(page_id: str, psid: str, ts: int) -> dict:
    return {
        "object": "page",
        "entry": [
            {
                "id": page_id,
                "time": ts,
                "messaging": [
                    {
                        "sender": {"id": psid},
                        "recipient": {"id": page_id},
                        "timestamp": ts,
                        "message": {"mid": f"m_{psid}", "text": "hi"},
                    }
                ],
            }
        ],
    }


def test_metrics_are_the_same_whichever_worker_answers(gunicorn, store):
    url = gunicorn.url
    store.profiles.create(name="P", page_id="777", page_name="P", page_token="t")
    with requests.Session() as session:
        for i in range(30):
            assert post(url, message("777", f"9{i}", 1764000000000 + i), session) == 200
        assert (
            session.post(
                f"{url}/webhook", data=b"{}", headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}
            ).status_code
            == 403
        )
    counts = set()
    for _ in range(12):  # fresh connections: different gunicorn workers answer
        text = requests.get(f"{url}/metrics", timeout=5).text
        counts.add(
            re.search(r'messenger_webhook_events_total\{kind="message"\} (\S+)', text).group(1)
        )
        assert re.search(r'messenger_webhook_rejected_total\{cause="signature"\} 1\.0', text)
        assert "messenger_queue_depth" in text and "messenger_graph_latency_seconds_bucket" in text
        assert "messenger_webhook_writes_parked 0.0" in text
    assert counts == {"30.0"}


def test_sigterm_under_load_finishes_requests_in_flight_and_loses_nothing_acknowledged(
    gunicorn, store, refs
):
    process, url, _ = gunicorn
    profile = store.profiles.create(name="P", page_id="888", page_name="P", page_token="t")
    statuses: dict[str, int | str] = {}
    lock = threading.Lock()

    def hammer(thread: int):
        with requests.Session() as session:
            for i in range(60):
                contact = f"t{thread}-{i}"
                payload = {
                    "object": "page",
                    "entry": [
                        {
                            "id": "888",
                            "time": 1,
                            "messaging": [
                                {
                                    "sender": {"id": f"{thread}{i:03d}"},
                                    "recipient": {"id": "888"},
                                    "timestamp": 1764000000000 + i,
                                    "optin": {"ref": refs.sign(profile.id, contact)},
                                }
                            ],
                        }
                    ],
                }
                try:
                    status = post(url, payload, session)
                except requests.ConnectionError:
                    status = "refused"  # after shutdown: Facebook would retry
                with lock:
                    statuses[contact] = status

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(statuses) >= 100)
    process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    assert process.wait(40) == 0
    answered = {c: s for c, s in statuses.items() if s != "refused"}
    assert len(answered) >= 100 and set(answered.values()) == {200}  # no 5xx, no half-done request
    assert "refused" in statuses.values(), "the load did not outlast the shutdown"
    for contact in answered:  # every opt-in acknowledged with 200 is stored
        assert store.contacts.get(contact) == {
            profile.optin_field: f"{contact[1:].split('-')[0]}{int(contact.split('-')[1]):03d}"
        }


def test_each_worker_listens_on_a_socket_of_its_own_and_a_second_server_is_refused(
    gunicorn, tmp_path
):
    """reuse_port: the kernel spreads connections over the workers' sockets. A second server
    on the same address must fail to start, not quietly take a share of the traffic."""
    port = int(gunicorn.env["PORT"])
    workers = psutil.Process(gunicorn.process.pid).children()
    listening = {worker.pid: listening_sockets(worker.pid, port) for worker in workers}
    assert len(workers) == 3 and all(len(sockets) == 1 for sockets in listening.values()), listening
    assert not listening_sockets(gunicorn.process.pid, port)  # the master holds none

    second = start_gunicorn(gunicorn.env, tmp_path / "second.log")
    try:
        assert second.wait(30) == 1
    finally:
        if second.poll() is None:
            second.kill()
    assert (
        f"cannot listen on 127.0.0.1:{port}: Address already in use"
        in (tmp_path / "second.log").read_text()
    )
    assert requests.get(f"{gunicorn.url}/healthz", timeout=5).status_code == 200
    assert len(psutil.Process(gunicorn.process.pid).children()) == 3


def test_the_master_logs_the_address_it_serves(gunicorn, tmp_path):
    """With reuse_port the master holds no socket: gunicorn's line read "Listening at:  (pid)"."""
    log = (tmp_path / "gunicorn.log").read_text()
    assert f"Listening at: {gunicorn.url} ({gunicorn.process.pid})" in log, log


def test_a_worker_stopping_under_load_refuses_no_connection(gunicorn, store):
    """Each worker in turn stops gracefully (SIGTERM to the worker: what a replacement after
    WEB_MAX_REQUESTS does) while 8 threads post webhooks, each on a new connection. With a
    socket per worker, connections the kernel queued on a stopping worker's socket would be
    reset when it closes: gunicorn.conf.py's ThreadWorker takes them first. Every POST must
    be answered 200."""
    process, url, env = gunicorn
    port = int(env["PORT"])
    store.profiles.create(name="P", page_id="999", page_name="P", page_token="t")
    master = psutil.Process(process.pid)
    results: Counter = Counter()
    lock, stop = threading.Lock(), threading.Event()

    def hammer(thread: int):
        for i in itertools.count():
            if stop.is_set():
                return
            try:  # a new connection every time
                status = post(url, message("999", f"{thread}{i:05d}", 1764000000000 + i))
            except requests.ConnectionError as exc:
                status = f"connection error: {exc}"[:200]
            with lock:
                results[status] += 1

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    try:
        for victim in master.children():
            answered = sum(results.values())
            wait_until(lambda answered=answered: sum(results.values()) >= answered + 100)  # load
            victim.send_signal(signal.SIGTERM)
            wait_until(
                lambda victim=victim: victim.pid not in {c.pid for c in master.children()},
                timeout=30,
            )
            wait_until(
                lambda: (
                    len(master.children()) == 3
                    and all(listening_sockets(c.pid, port) for c in master.children())
                ),
                timeout=30,
            )
        answered = sum(results.values())
        wait_until(lambda: sum(results.values()) >= answered + 100)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert set(results) == {200}, results.most_common(5)
