"""Redis failover under webhook load: time from SIGKILL of the primary to the first 200, and
acknowledged webhooks lost, with and without waiting for a replica (WEBHOOK_REPLICA_WAIT_MS).

    python -m bench.failover [--trials 3] [--wait-ms 0,100] [--lag-ms 0] [--clients 16]
                             [--before 3] [--after 1] [--quick] [--keep]

Each trial, for each wait setting, starts from nothing: a primary, a replica and three
sentinels (tests/sentinel_cluster.py: failover in one to two seconds), gunicorn
(gunicorn.conf.py, WEB_CONCURRENCY 2) reaching Redis through the sentinels, and `--clients`
threads posting signed 1-event opt-in webhooks, each for a new person, as fast as they are
answered. A webhook answered other than 200 is posted again 50 ms later, as Facebook retries.
After `--before` seconds the primary is SIGKILLed; the load goes on until `--after` seconds
after the first 200 from the promoted replica. Then every acknowledged opt-in is looked up on
the new primary: one that is missing was lost (acknowledged by the old primary, never
replicated; Facebook will not send it again).

On one machine the replica gets each write within microseconds. `--lag-ms` puts it across a
network instead: it replicates through a relay that delays every byte that long each way, and
that loses what it holds when the primary dies, as when the primary's machine or network fails
rather than its process (the sentinels' failover timeout is raised so that they leave the
replica on the relay).

Per trial: webhooks acknowledged per second before the kill and their p50/p99 latency, the
answers other than 200 (always 503: a 500 or a dropped connection fails the benchmark), the
time from the kill to the first 200, and the acknowledged webhooks lost. The summary gives each
setting's totals.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from queue import Queue

from bench._harness import (
    ROOT,
    parse_sizes,
    run_main,
    service_env,
    start_app,
    wait_for_parked_writes,
)

QUICK = {"trials": 1, "before": 1.5, "clients": 4}
RETRY_S = 0.05  # Facebook retries a failed webhook; sooner here, so the recovery is seen sharply
PAGE_ID = "109000000000001"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--trials", type=int, default=3, help="trials per wait setting")
    parser.add_argument(
        "--wait-ms", default="0,100", help="WEBHOOK_REPLICA_WAIT_MS values (default 0,100)"
    )
    parser.add_argument(
        "--lag-ms", type=float, default=0.0, help="replication delay each way (default 0)"
    )
    parser.add_argument("--clients", type=int, default=16, help="posting threads (default 16)")
    parser.add_argument("--before", type=float, default=3.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=1.0, help="seconds of load after recovery")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    args = parse_sizes(parser, argv, QUICK)
    waits = [int(ms) for ms in args.wait_ms.split(",")]
    return run_main(
        lambda stack, tmp: run(args, waits, stack, tmp),
        "bench-failover-",
        args.keep,
        "gunicorn and the Redis processes",
    )


def run(args: argparse.Namespace, waits: list[int], stack: ExitStack, tmp: Path) -> int:
    print(
        f"{args.trials} trials per setting; {args.clients} clients posting 1-event opt-ins; "
        f"primary SIGKILLed after {args.before:.1f} s; replica {args.lag_ms:g} ms away"
    )
    results: dict[int, list[Trial]] = {ms: [] for ms in waits}
    for number in range(1, args.trials + 1):
        for ms in waits:
            with ExitStack() as trial_stack:
                trial = run_trial(args, ms, trial_stack, tmp / f"trial-{number}-wait-{ms}")
            print(f"trial {number}, {label(ms)}: {trial.summary()}", flush=True)
            results[ms].append(trial)
    print("summary:")
    for ms, trials in results.items():
        print(f"  {label(ms)}: {summarise(trials)}")
    failed = [t for ts in results.values() for t in ts if t.problems]
    for trial in failed:
        print(f"problem: {'; '.join(trial.problems)}", file=sys.stderr)
    return 1 if failed else 0


def label(ms: int) -> str:
    return f"WAIT 1 {ms} ms" if ms else "no WAIT"


@dataclass
class Webhook:
    psid: str
    contact: str
    attempts: list[tuple[float, float, int | None]] = field(default_factory=list)  # start, end

    @property
    def acknowledged(self) -> tuple[float, float] | None:
        """(start, end) of the attempt answered 200, if any."""
        return next(((s, e) for s, e, status in self.attempts if status == 200), None)


@dataclass
class Trial:
    killed_at: float
    started_at: float
    webhooks: list[Webhook]
    lost: list[Webhook]
    problems: list[str]
    waits: int  # WAIT calls on the primary before the kill

    def acknowledged_before_kill(self) -> list[Webhook]:
        return [w for w in self.webhooks if w.acknowledged and w.acknowledged[1] < self.killed_at]

    def rate_before_kill(self) -> float:
        return len(self.acknowledged_before_kill()) / (self.killed_at - self.started_at)

    def latencies_ms(self) -> list[float]:
        """Of the acknowledged webhooks answered at the first attempt before the kill."""
        return [
            (w.attempts[0][1] - w.attempts[0][0]) * 1000
            for w in self.acknowledged_before_kill()
            if len(w.attempts) == 1
        ]

    def recovery_s(self) -> float:
        """From the kill to the first 200 to an attempt made after it."""
        return (
            min(
                w.acknowledged[1]
                for w in self.webhooks
                if w.acknowledged and w.acknowledged[0] > self.killed_at
            )
            - self.killed_at
        )

    def refused(self) -> int:
        return sum(1 for w in self.webhooks for _, _, status in w.attempts if status != 200)

    def summary(self) -> str:
        latencies = sorted(self.latencies_ms())
        p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
        acknowledged = sum(1 for w in self.webhooks if w.acknowledged)
        return (
            f"{acknowledged} acknowledged ({self.rate_before_kill():.0f}/s before the kill, "
            f"p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms); "
            f"{self.waits} WAITs; {self.refused()} answers 503; "
            f"first 200 {self.recovery_s():.2f} s after the kill; "
            f"{len(self.lost)} acknowledged lost"
        )


def summarise(trials: list[Trial]) -> str:
    acknowledged = sum(1 for t in trials for w in t.webhooks if w.acknowledged)
    lost = sum(len(t.lost) for t in trials)
    recoveries = sorted(t.recovery_s() for t in trials)
    return (
        f"{lost} of {acknowledged} acknowledged webhooks lost over {len(trials)} trials; "
        f"first 200 after the kill median {statistics.median(recoveries):.2f} s, "
        f"max {recoveries[-1]:.2f} s; before the kill "
        f"{statistics.mean(t.rate_before_kill() for t in trials):.0f} webhooks/s, "
        f"p50 {statistics.mean(statistics.median(t.latencies_ms()) for t in trials):.1f} ms"
    )


def run_trial(args: argparse.Namespace, wait_ms: int, stack: ExitStack, tmp: Path) -> Trial:
    from bench._harness import APP_SECRET, SECRET_KEY
    from bot.refs import OptinRefs
    from bot.signature import WebhookSignature
    from storage.embedded import free_port
    from tests.live import start_gunicorn
    from tests.sentinel_cluster import SentinelCluster

    tmp.mkdir(parents=True)
    cluster = SentinelCluster(tmp / "redis", failover_timeout_ms=600_000 if args.lag_ms else 2000)
    stack.callback(cluster.stop)
    link = None
    if args.lag_ms:
        link = DelayedLink(cluster.primary.port, args.lag_ms / 1000)
        stack.callback(link.close)
    cluster.start(replica_via=link.port if link else None)
    env = service_env(
        "", "http://127.0.0.1:9", **cluster.env(), WEBHOOK_REPLICA_WAIT_MS=str(wait_ms)
    )
    store = start_app(stack, env).extensions["storage"]
    profile = store.profiles.create(
        name="Failover", page_id=PAGE_ID, page_name="Failover Page", page_token="token"
    )
    port = free_port()
    web = start_gunicorn(
        {**os.environ, **env, "PORT": str(port), "WEB_CONCURRENCY": "2", "ACCESS_LOG": ""},
        tmp / "gunicorn.log",
    )
    stack.callback(lambda: (web.terminate(), web.wait(30)))
    load = Load(
        f"http://127.0.0.1:{port}/webhook",
        profile.id,
        OptinRefs(SECRET_KEY),
        WebhookSignature(APP_SECRET),
    )
    wait_until_up(load.url.replace("/webhook", "/healthz"), web)
    cluster.wait_ready()
    started_at = load.start(args.clients)
    time.sleep(args.before)
    waits = wait_calls(cluster.primary.port)
    old = cluster.kill_primary().port
    killed_at = time.monotonic()
    cluster.wait_promoted(old)
    deadline = time.monotonic() + 30
    while not any(w.acknowledged and w.acknowledged[0] > killed_at for w in load.snapshot()):
        if time.monotonic() > deadline:
            raise RuntimeError("no webhook was acknowledged within 30 s of the promotion")
        time.sleep(0.01)
    time.sleep(args.after)  # load on the new primary
    webhooks = load.stop()
    wait_for_parked_writes(store)  # those the new primary has: the web processes apply them
    field_name = profile.optin_field
    lost = [
        w
        for w in webhooks
        if w.acknowledged and (store.contacts.get(w.contact) or {}).get(field_name) != w.psid
    ]
    problems = sorted(
        {f"answered {status}" for w in webhooks for _, _, status in w.attempts}
        - {"answered 200", "answered 503"}
    )
    return Trial(killed_at, started_at, webhooks, lost, problems, waits)


def wait_calls(port: int) -> int:
    """WAIT commands the Redis on `port` has run (INFO commandstats)."""
    import redis

    with redis.Redis(port=port) as client:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


class DelayedLink:
    """A TCP relay to `port` delaying every byte by `delay_s` each way; when either side
    closes, what it still holds is dropped (a machine or network failure, not a process's)."""

    def __init__(self, port: int, delay_s: float):
        self.target, self.delay_s = port, delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:  # closed
                return
            try:
                far = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the primary is gone: so is the link
                self._close(near)
                continue
            self._sockets += [near, far]
            for source, sink in ((near, far), (far, near)):
                queue: Queue = Queue()
                gone = threading.Event()  # the source closed
                reader = threading.Thread(target=self._read, args=(source, queue, gone))
                writer = threading.Thread(target=self._write, args=(queue, sink, gone))
                for thread in (reader, writer):
                    thread.daemon = True
                    thread.start()

    def _read(self, source: socket.socket, queue: Queue, gone: threading.Event) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                gone.set()
                queue.put((0.0, b""))  # wakes the writer
                return
            queue.put((time.monotonic() + self.delay_s, data))

    def _write(self, queue: Queue, sink: socket.socket, gone: threading.Event) -> None:
        while True:
            due, data = queue.get()
            if gone.wait(max(0.0, due - time.monotonic())) or not data:
                self._close(sink)  # what was still on its way is lost with the source
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        self.listener.close()
        for sock in self._sockets:
            self._close(sock)


def wait_until_up(url: str, web, timeout: float = 30.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while True:
        if web.poll() is not None:
            raise RuntimeError("gunicorn exited; see its log")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not answer within {timeout} s")
        time.sleep(0.05)


class Load:
    """Threads posting opt-ins for new people, each retried until it is answered 200."""

    def __init__(self, url: str, profile_id: str, refs, signature):
        self.url, self.profile_id, self.refs, self.signature = url, profile_id, refs, signature
        self.webhooks: list[Webhook] = []
        self._numbers, self._stop = count(), threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, clients: int) -> float:
        self._threads = [threading.Thread(target=self._post) for _ in range(clients)]
        for thread in self._threads:
            thread.start()
        return time.monotonic()

    def snapshot(self) -> list[Webhook]:
        return list(self.webhooks)

    def stop(self) -> list[Webhook]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.snapshot()

    def _post(self) -> None:
        import requests

        with requests.Session() as session:
            while not self._stop.is_set():
                number = next(self._numbers)
                webhook = Webhook(f"9{number:09d}", f"c{number}")
                self.webhooks.append(webhook)
                body = self._body(webhook)
                headers = {"X-Hub-Signature-256": self.signature.sign(body)}
                while not webhook.acknowledged:
                    started = time.monotonic()
                    try:
                        status: int | None = session.post(
                            self.url, data=body, headers=headers, timeout=10
                        ).status_code
                    except requests.RequestException:
                        status = None
                    webhook.attempts.append((started, time.monotonic(), status))
                    if status != 200:
                        time.sleep(RETRY_S)

    def _body(self, webhook: Webhook) -> bytes:
        event = {
            "sender": {"id": webhook.psid},
            "recipient": {"id": PAGE_ID},
            "timestamp": int(time.time() * 1000),
            "optin": {"ref": self.refs.sign(self.profile_id, webhook.contact)},
        }
        entry = {"id": PAGE_ID, "time": event["timestamp"], "messaging": [event]}
        return json.dumps({"object": "page", "entry": [entry]}).encode()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # tests.sentinel_cluster, tests.live
    sys.exit(main())
