"""Redis with Sentinel: settings checked at start-up, clients that follow the primary, and a
primary SIGKILLed under a webhook burst and a run, with real processes (gunicorn, an RQ worker,
a primary, a replica and three sentinels). Webhooks answer 503, never 500, until the replica is
promoted, then 200 again with nothing restarted; the run finishes; nobody is sent twice."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import timedelta
from itertools import count

import pytest
import redis as redis_lib
import requests

from bench._harness import wait_for_parked_writes
from bot.app import create_app
from bot.config import Settings
from bot.errors import ConfigError
from bot.launch import wants_embedded_redis
from storage.embedded import free_port
from tests.conftest import API_TOKEN, messenger_node, service_env, wait_until
from tests.live import start_gunicorn
from tests.run_fixtures import connect_page_with_people
from tests.sentinel_cluster import RedisNode, SentinelCluster
from tests.workers import WorkerProcesses

pytestmark = pytest.mark.slow
UNUSED_GRAPH = "http://127.0.0.1:9"  # tests that never reach Facebook
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env(env, dotenv=False)


@pytest.fixture
def cluster(tmp_path):
    with SentinelCluster(tmp_path / "redis") as started:
        yield started


# -- settings --------------------------------------------------------------------------------------


def test_sentinel_settings_are_checked_at_start_each_problem_named():
    base = {k: v for k, v in service_env("", UNUSED_GRAPH).items() if k != "REDIS_URL"}
    chosen = settings_of(
        {**base, "REDIS_SENTINELS": "s1:26379, [::1]:26380", "REDIS_SENTINEL_MASTER_NAME": "m"}
    )
    assert chosen.redis_sentinels == (("s1", 26379), ("::1", 26380))
    assert chosen.redis_url == "redis://"  # not needed with Sentinel: database 0, no password
    assert chosen.webhook_replica_wait_ms == 100  # replicas: webhooks wait for one
    assert settings_of({**base, "REDIS_URL": "redis://h/0"}).webhook_replica_wait_ms == 0

    with pytest.raises(ConfigError) as bad:
        settings_of({**base, "REDIS_SENTINELS": "s1,s2:99999,s3:x, s4:26379"})
    assert bad.value.problems == [
        "REDIS_SENTINELS must be host:port pairs separated by commas, such as "
        "sentinel-1:26379,sentinel-2:26379 (got 's1', 's2:99999', 's3:x')",
        "REDIS_SENTINEL_MASTER_NAME is not set: the name your sentinels monitor the primary "
        "under (`sentinel monitor <name> <host> <port> <quorum>`)",
    ]
    with pytest.raises(ConfigError) as unnamed:
        settings_of({**base, "REDIS_URL": "redis://h/2", "REDIS_SENTINEL_MASTER_NAME": "m"})
    assert [p.split(" ")[0] for p in unnamed.value.problems] == ["REDIS_SENTINELS"]


def test_make_run_starts_its_own_redis_only_when_none_is_named():
    assert wants_embedded_redis({})
    assert wants_embedded_redis({"REDIS_URL": " "})
    assert not wants_embedded_redis({"REDIS_URL": "redis://h/0"})
    assert not wants_embedded_redis({"REDIS_SENTINELS": "s1:26379"})


# -- a demoted primary, and a failover through Sentinel --------------------------------------------


def optin_webhook(page_id: str, psid: str, ref: str) -> bytes:
    return json.dumps(
        {
            "object": "page",
            "entry": [
                {
                    "id": page_id,
                    "time": 1,
                    "messaging": [
                        {
                            "sender": {"id": psid},
                            "recipient": {"id": page_id},
                            "timestamp": int(time.time() * 1000),
                            "optin": {"ref": ref},
                        }
                    ],
                }
            ],
        }
    ).encode()


def post_webhook(client, app, body: bytes):
    signature = app.extensions["signature"].sign(body)
    return client.post("/webhook", data=body, headers={"X-Hub-Signature-256": signature})


def test_a_read_only_redis_is_answered_503_never_500(tmp_path):
    """A single Redis demoted to a replica (a failover without Sentinel in our settings) still
    answers, but every write gets READONLY: webhooks and the API say 503 so callers retry."""
    with RedisNode(tmp_path / "replica", replica_of=1) as node:  # a replica of nothing
        app = create_app(settings_of(service_env(node.url, UNUSED_GRAPH)))
        client = app.test_client()
        hook = post_webhook(client, app, optin_webhook("1", "2", "r"))
        api = client.put("/api/v1/contacts/c1", json={"fields": {"A": "1"}}, headers=BEARER)
        app.extensions["storage"].redis.close()
    assert (hook.status_code, hook.text) == (503, "storage unavailable, retry later")
    assert api.status_code == 503
    assert api.get_json()["error"]["code"] == "unavailable"


def test_web_follows_a_failover_through_sentinel_with_redis_urls_database_and_password(tmp_path):
    """A planned failover (SENTINEL FAILOVER): the old primary is demoted but still answers.
    The connections open to it get READONLY; the webhook's script call retries once on a new
    connection, which asks the sentinel and reaches the promoted replica. The sentinel and the
    Redis nodes each want their password; REDIS_URL's database is where the data goes."""
    with SentinelCluster(
        tmp_path / "redis", 1, sentinel_password="s3cret", password="data-pw"
    ) as cluster:
        app = create_app(settings_of(service_env("", UNUSED_GRAPH, **cluster.env(database=3))))
        store, client = app.extensions["storage"], app.test_client()
        assert client.get("/healthz").get_json() == {"status": "ok", "redis": "ok"}
        assert post_webhook(client, app, optin_webhook("1", "2", "before")).status_code == 200
        put = client.put("/api/v1/contacts/c1", json={"fields": {"A": "1"}}, headers=BEARER)
        assert put.status_code == 200

        old = cluster.primary_port()
        new = cluster.failover()
        assert cluster.node_on(old).process.poll() is None  # demoted, not gone

        # the same thread's script connection, open to the old primary: retried, not refused
        assert post_webhook(client, app, optin_webhook("1", "3", "after")).status_code == 200
        statuses = [
            client.put("/api/v1/contacts/c2", json={"fields": {"B": "2"}}, headers=BEARER)
            for _ in range(3)
        ]
        assert {a.status_code for a in statuses} <= {200, 503} and statuses[-1].status_code == 200
        assert client.get("/healthz").status_code == 200
        assert (store.contacts.get("c1"), store.contacts.get("c2")) == ({"A": "1"}, {"B": "2"})
        with new.client() as on_new:
            assert on_new.info("keyspace").keys() == {"db3"}  # REDIS_URL's database only
        store.redis.close()


def wait_calls(port: int) -> int:
    with redis_lib.Redis(port=port) as client:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def test_webhooks_wait_for_the_replica_until_a_wait_times_out(tmp_path):
    """WEBHOOK_REPLICA_WAIT_MS: the webhook's write and a WAIT 1 go in one round trip, so the
    replica has the webhook before it is answered 200; with the replica gone, the wait that
    timed out turns waiting off rather than slowing every webhook."""
    with SentinelCluster(tmp_path / "redis", sentinels=0) as cluster:
        env = service_env(cluster.primary.url, UNUSED_GRAPH, WEBHOOK_REPLICA_WAIT_MS="300")
        app = create_app(settings_of(env))
        client, primary = app.test_client(), cluster.primary.port
        waits = wait_calls(primary)

        assert post_webhook(client, app, optin_webhook("1", "2", "a")).status_code == 200
        assert wait_calls(primary) > waits
        with cluster.replica.client() as replica, cluster.primary.client() as on_primary:
            assert replica.dbsize() == on_primary.dbsize() > 0  # the replica had it: WAIT

        cluster.replica.kill()
        started = time.monotonic()
        assert post_webhook(client, app, optin_webhook("1", "3", "b")).status_code == 200
        assert time.monotonic() - started >= 0.3  # waited for a replica that never answered
        started, waits = time.monotonic(), wait_calls(primary)
        assert post_webhook(client, app, optin_webhook("1", "4", "c")).status_code == 200
        assert time.monotonic() - started < 0.3 and wait_calls(primary) == waits  # no more waits
        app.extensions["storage"].redis.close()


# -- the primary killed under load -----------------------------------------------------------------


class Service:
    """gunicorn, one RQ worker and an in-process app (API calls, reads), all through the
    cluster's sentinels, on REDIS_URL's database 1."""

    def __init__(self, cluster: SentinelCluster, fb, sandbox_url: str, tmp_path, **overrides):
        port = free_port()
        self.fb, self.url = fb, f"http://127.0.0.1:{port}"
        self.env = service_env("", sandbox_url, **cluster.env(database=1), **overrides)
        web_env = {**os.environ, **self.env, "PORT": str(port), "WEB_CONCURRENCY": "2"}
        self.web = start_gunicorn({**web_env, "ACCESS_LOG": ""}, tmp_path / "gunicorn.log")
        self.workers = WorkerProcesses(self.env, tmp_path)
        self.workers.start()
        self.app = create_app(settings_of(self.env))
        self.store, self.client = self.app.extensions["storage"], self.app.test_client()
        wait_until(self._up, timeout=30)
        fb.configure(
            webhook_url=f"{self.url}/webhook", webhook_retries=200, webhook_retry_delay_ms=50
        )

    def _up(self) -> bool:
        assert self.web.poll() is None, "gunicorn exited; see gunicorn.log"
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:  # refused, or workers still booting
            return False

    def health(self) -> tuple[int, dict]:
        answer = requests.get(f"{self.url}/healthz", timeout=5)
        return answer.status_code, answer.json()

    def api(self, method: str, path: str, **kwargs):
        return self.client.open(f"/api/v1{path}", method=method.upper(), headers=BEARER, **kwargs)

    def page_with_people(self, n: int) -> tuple[dict, dict, list[str]]:
        """A profile whose Page has `n` opted-in contacts, and program P sending to them."""
        contacts = [f"c{i:04d}" for i in range(n)]
        page, profile = connect_page_with_people(self.fb, self.store, self.api, contacts)
        program = {"name": "P", "status": "active", "nodes": [messenger_node(profile["id"])]}
        assert self.api("put", "/programs/P", json=program).status_code == 201
        return page, profile, contacts

    def start_run(self, contacts: list[str]) -> str:
        body = {"contacts": [{"id": c} for c in contacts]}
        answer = self.api("post", "/programs/P/nodes/n1/runs", json=body)
        assert answer.status_code == 202, answer.get_json()
        return answer.get_json()["run_id"]

    def run(self, run_id: str) -> dict:
        return self.api("get", f"/runs/{run_id}?limit=1000").get_json()

    def stop_workers(self) -> float:
        """SIGTERM (RQ's warm shutdown), SIGKILL after 15 s; seconds until they were gone."""
        started = time.monotonic()
        self.workers.stop_all()
        return time.monotonic() - started

    def close(self) -> None:
        try:
            self.workers.stop_all()
        finally:
            self.web.terminate()
            self.web.wait(30)
            self.fb.reset()
            self.app.extensions["graph"].close()
            self.store.redis.close()


class OptinBurst:
    """Threads posting opt-ins through the simulator, which retries each until it gets 200,
    until stopped; each person's ref names a contact of their own (`contact_of`)."""

    def __init__(self, fb, page: dict, profile: dict, refs, threads: int = 3):
        self.fb, self.page, self.profile, self.refs = fb, page, profile, refs
        self.contact_of: dict[str, str] = {}
        self._numbers, self._stop = count(), threading.Event()
        self._threads = [threading.Thread(target=self._post) for _ in range(threads)]

    def start(self) -> OptinBurst:
        for thread in self._threads:
            thread.start()
        return self

    def _post(self) -> None:
        while not self._stop.is_set():
            contact = f"w{next(self._numbers):04d}"
            psid = self.fb.add_person(self.page["id"])
            self.contact_of[psid] = contact
            ref = self.refs.sign(self.profile["id"], contact)
            self.fb.post_event("optin", page_id=self.page["id"], psid=psid, ref=ref)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def attempts(self) -> list[dict]:
        """Every delivery attempt of the opt-ins, in order: psid, status, at (epoch seconds)."""
        found = []
        for attempt in self.fb.webhooks(kind="optin"):
            event = json.loads(attempt["body"])["entry"][0]["messaging"][0]
            found.append(
                {
                    "psid": event["sender"]["id"],
                    "status": attempt["status"],
                    "at": attempt["at_ms"] / 1000,
                }
            )
        return sorted(found, key=lambda a: a["at"])

    def lost(self, store, field: str, acknowledged: dict[str, float]) -> list[str]:
        """The acknowledged opt-ins whose contact does not have the person in `field`, once the
        web processes have applied the writes they parked (those the new primary has)."""
        wait_for_parked_writes(store)
        return [
            psid
            for psid in acknowledged
            if (store.contacts.get(self.contact_of[psid]) or {}).get(field) != psid
        ]


def first_200_after(attempts: list[dict], moment: float) -> float | None:
    """When the first attempt made after `moment` and answered 200 was made."""
    return next((a["at"] for a in attempts if a["status"] == 200 and a["at"] > moment), None)


def test_primary_killed_during_a_webhook_burst_and_a_run(cluster, fb, sandbox_server, tmp_path):
    service = Service(
        cluster,
        fb,
        sandbox_server.url,
        tmp_path,
        SEND_RATE_PER_PAGE="100",
        RUN_BATCH_SIZE="100",
        RUN_LEASE_SECONDS="2",
        UNKNOWN_DEADLINE_SECONDS="5",
    )
    try:
        page, profile, contacts = service.page_with_people(300)
        cluster.wait_ready()  # sentinels that can agree the primary is down
        run_id = service.start_run(contacts)
        burst = OptinBurst(fb, page, profile, service.app.extensions["refs"]).start()
        wait_until(lambda: len(fb.sends()) >= 80 and len(burst.contact_of) >= 20, timeout=15)

        about_to_kill = time.time()
        old = cluster.kill_primary().port
        killed_at, sent_before = time.time(), len(fb.sends())
        health_meanwhile = service.health()
        cluster.wait_promoted(old)
        back_at = wait_until(lambda: first_200_after(burst.attempts(), killed_at), timeout=15)
        wait_until(lambda: sum(a["at"] > back_at + 1 for a in burst.attempts()) >= 10, timeout=15)
        burst.stop()
        wait_until(lambda: service.run(run_id)["state"] == "done", timeout=30)
        scheduled = service.app.extensions["rq_queue"].enqueue_in(timedelta(0), "time.time")
        wait_until(lambda: scheduled.get_status(refresh=True) == "finished", timeout=10)
        health_after = service.health()
        attempts = burst.attempts()
        acknowledged = {a["psid"]: a["at"] for a in attempts if a["status"] == 200}
        lost = burst.lost(service.store, profile["optin_field"], acknowledged)
        run = service.run(run_id)
        accepted = fb.sends(status="accepted")
        every_webhook = Counter(w["status"] for w in fb.webhooks())  # receipts and echoes too
        stopped_in = service.stop_workers()
    finally:
        service.close()

    assert set(every_webhook) <= {200, 503}, every_webhook  # never a 500 or a dropped connection
    assert health_meanwhile[0] == 503 and health_meanwhile[1]["status"] == "unavailable"
    assert health_after == (200, {"status": "ok", "redis": "ok"})
    refused_at = [a["at"] for a in attempts if a["status"] == 503]
    assert refused_at and min(refused_at) > about_to_kill - 0.5  # from the kill (or in flight)
    assert all(a["status"] == 200 for a in attempts if a["at"] > back_at + 1)  # nothing restarted
    assert set(acknowledged) == set(burst.contact_of)  # every opt-in taken in the end
    assert all(acknowledged[psid] < killed_at for psid in lost)  # only the old primary's
    assert sent_before < len(contacts)  # killed mid-run
    assert {c["id"] for c in run["contacts"]} == set(contacts)  # every contact one outcome
    assert {c["outcome"] for c in run["contacts"]} <= {"sent", "failed"}
    per_recipient = Counter(s["recipient"]["id"] for s in accepted)
    assert max(per_recipient.values()) == 1, "someone got the message twice"
    assert stopped_in < 5, "the worker did not stop at SIGTERM after the failover"
    print(
        f"sentinel failover: first 200 {back_at - killed_at:.2f} s after the kill; "
        f"{len(lost)} of {len(acknowledged)} acknowledged opt-ins lost; "
        f"{len(refused_at)} attempts answered 503; run counts {run['counts']}"
    )
