"""Redis with Sentinel from real processes: a primary, its replica and sentinels, each a
redis-server on a free port of 127.0.0.1 (tests/test_sentinel.py, bench/failover.py).

The timings are short so that a failover takes a second or two: a primary that has not answered
for DOWN_AFTER_MS is down for a sentinel, two sentinels agreeing make it down for all, and one of
them promotes the replica.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis

from storage.embedded import EmbeddedRedis, redis_server_binary

MASTER_NAME = "messenger"
DOWN_AFTER_MS = 400
FAILOVER_TIMEOUT_MS = 2000
QUORUM = 2


class RedisNode(EmbeddedRedis):
    """A redis-server on a free TCP port, without persistence; `replica_of` a primary's port;
    with a `password`, asked of clients and given to its primary."""

    def __init__(self, data_dir: Path, replica_of: int | None = None, password: str = ""):
        super().__init__(data_dir, appendonly=False, use_socket=False)
        self.replica_of, self.password = replica_of, password

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0" if self.password else super().url

    def command(self) -> list[str]:
        args = super().command() + ["--repl-diskless-sync-delay", "0"]  # 5 s by default
        if self.replica_of:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        return args

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=timeout, decode_responses=True)


class SentinelNode(EmbeddedRedis):
    """`redis-server <config> --sentinel`, watching the primary on `primary_port`; with a
    `password`, clients and the other sentinels must give it."""

    def __init__(
        self,
        data_dir: Path,
        primary: RedisNode,
        password: str = "",
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
    ):
        super().__init__(data_dir, appendonly=False, use_socket=False)
        self.primary, self.password = primary, password
        self.failover_timeout_ms = failover_timeout_ms

    def command(self) -> list[str]:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.data_dir}",
            f"logfile {self.data_dir / 'sentinel.log'}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
        ]
        if self.primary.password:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {self.primary.password}")
        if self.password:  # asked of clients, and given to the other sentinels
            lines += [f"requirepass {self.password}", f"sentinel sentinel-pass {self.password}"]
        config = self.data_dir / "sentinel.conf"  # sentinel rewrites it: one per sentinel
        config.write_text("\n".join(lines) + "\n")
        return [redis_server_binary(), str(config), "--sentinel"]

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=self.password or None, socket_timeout=1, decode_responses=True
        )

    def wait_ready(self, timeout: float) -> None:
        """Until it answers PING (given the password, which EmbeddedRedis does not know)."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if self.process and self.process.poll() is not None:
                        raise RuntimeError(f"sentinel exited; see {self.data_dir}") from None
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.02)


class SentinelCluster:
    """A primary, one replica and `sentinels` sentinels; `kill_primary` and watch the failover.
    `password` is the primary's and replica's, `sentinel_password` the sentinels' own."""

    def __init__(
        self,
        root: Path,
        sentinels: int = 3,
        sentinel_password: str = "",
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
        password: str = "",
    ):
        self.root, self.password = root, password
        self.primary = RedisNode(root / "primary", password=password)
        self.replica: RedisNode | None = None
        self.sentinel_count, self.sentinel_password = sentinels, sentinel_password
        self.failover_timeout_ms = failover_timeout_ms
        self.sentinels: list[SentinelNode] = []

    @property
    def nodes(self) -> list[RedisNode]:
        return [self.primary] + ([self.replica] if self.replica else [])

    def start(self, replica_via: int | None = None) -> SentinelCluster:
        """Start everything; sentinels answer at once, `wait_ready` says when they could fail
        over (they find each other through the primary within about two seconds).

        `replica_via`: the port of a relay to the primary that the replica replicates through
        (bench/failover.py's replica across a network). The sentinels would point the replica
        at the primary itself once `failover_timeout_ms` has passed: make that long enough."""
        self.primary.start()
        self.replica = RedisNode(
            self.root / "replica",
            replica_of=replica_via or self.primary.port,
            password=self.password,
        )
        self.replica.start()
        self._wait_replica_streaming()
        for n in range(self.sentinel_count):
            sentinel = SentinelNode(
                self.root / f"sentinel-{n}",
                self.primary,
                self.sentinel_password,
                self.failover_timeout_ms,
            )
            self.sentinels.append(sentinel)
            sentinel.start()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until every sentinel knows the replica and the other sentinels."""
        self._wait(self._sentinels_agree, "the sentinels to find each other", timeout)

    def env(self, database: int = 0) -> dict[str, str]:
        """The service's settings for this cluster: REDIS_URL gives the password and database
        (its address is not used; nothing listens there)."""
        password = f":{self.password}@" if self.password else ""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTER_NAME": MASTER_NAME,
            "REDIS_SENTINEL_PASSWORD": self.sentinel_password,
            "REDIS_URL": f"redis://{password}127.0.0.1:1/{database}",
        }

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers tells clients (SENTINEL
        MASTERS, as redis-py asks: GET-MASTER-ADDR-BY-NAME names the promoted replica sooner,
        while the other replicas are being reconfigured); None while it is down."""
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                try:
                    state = client.sentinel_master(MASTER_NAME)
                except redis.RedisError:
                    continue
                down = state["is_sdown"] or state["is_odown"]
                return None if down or not state["is_master"] else int(state["port"])
        return None

    def node_on(self, port: int) -> RedisNode:
        return next(node for node in self.nodes if node.port == port)

    def kill_primary(self) -> RedisNode:
        """SIGKILL the node the sentinels call the primary, as a crash would; return it."""
        port = self.primary_port()
        assert port is not None, "no sentinel answered"
        node = self.node_on(port)
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait()
        return node

    def failover(self, timeout: float = 10.0) -> RedisNode:
        """A planned failover (SENTINEL FAILOVER) with the old primary left running; return the
        promoted replica. The old primary is demoted here at once, keeping its clients'
        connections (which then get READONLY): the sentinels would do it on their next look at
        it, up to ten seconds later, and close those connections."""
        old = self.primary_port()
        assert old is not None, "no sentinel answered"
        deadline = time.monotonic() + timeout
        with self.sentinels[0].client() as client:
            while True:
                try:
                    client.sentinel_failover(MASTER_NAME)
                    break
                except redis.ResponseError:  # NOGOODSLAVE: not known well enough yet
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)
        new = self.wait_promoted(old, timeout)
        with self.node_on(old).client() as demoted:
            demoted.replicaof("127.0.0.1", new.port)
        return new

    def wait_promoted(self, old_port: int, timeout: float = 15.0) -> RedisNode:
        """Until the sentinels name another primary, and it takes writes; return it."""

        def promoted() -> bool:
            port = self.primary_port()
            return port not in (None, old_port) and self._writable(self.node_on(port))

        self._wait(promoted, "a replica to be promoted", timeout)
        port = self.primary_port()
        assert port is not None
        return self.node_on(port)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()

    def _wait_replica_streaming(self, timeout: float = 10.0) -> None:
        """Until the replica gets each write: after a full sync the primary streams writes
        only once the replica's first REPLCONF ACK comes (up to a second later), so a replica
        "in sync" could still be promoted without the writes of that second."""
        with self.primary.client(timeout + 1) as client:
            client.set("sentinel-cluster:probe", "1")
            if client.wait(1, int(timeout * 1000)) < 1:
                raise RuntimeError("the replica did not get a write")
            client.delete("sentinel-cluster:probe")

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(MASTER_NAME)
            others = len(self.sentinels) - 1
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < others:
                return False
        return True

    @staticmethod
    def _writable(node: RedisNode) -> bool:
        with node.client() as client:
            try:
                return client.info("replication")["role"] == "master"
            except redis.RedisError:
                return False

    @staticmethod
    def _wait(condition, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
