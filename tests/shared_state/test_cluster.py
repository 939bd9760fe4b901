"""Shared state on a real Redis Cluster (three masters on loopback, started once for the module):
the cap, the breaker, the wake-ups and the probe leadership work across pools as on one server,
``MOVED`` after a resharding is followed, and the node holding the pool's slot dying costs no
call.

Each test takes a namespace of its own whose slot a node other than the seed (the URL) serves,
so every command is routed by the cluster's slot map rather than landing where the URL points.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gleitzeit_llm import OllamaPoolManager, OllamaPoolProvider
from gleitzeit_llm.cli import main
from gleitzeit_llm.manager import Lease
from gleitzeit_llm.state.redis.keys import Keys
from gleitzeit_llm.testing.redis_cluster import LocalRedisCluster, key_slot

from .checks import MODEL, eventually, outage_costs_no_call, release_wakes_waiter
from .test_store import INSTANCES

_names = itertools.count()
HI = [{"role": "user", "content": "hi"}]


def _shared(cluster: LocalRedisCluster, **overrides: Any) -> dict[str, Any]:
    """shared_state for a fresh namespace, seeded through a node that does not hold its slot."""
    namespace = f"cluster-test-{next(_names)}"
    channel = Keys(namespace).channel
    return {"url": cluster.url_avoiding(channel), "cluster": True, "namespace": namespace, **overrides}


@pytest.fixture
def pools(redis_cluster: LocalRedisCluster) -> Iterator[Callable[..., OllamaPoolManager]]:
    """``pools(shared, load_balancing=None)``: a started manager on the cluster, closed after the test."""
    with contextlib.ExitStack() as closing:

        def make(
            shared: dict[str, Any],
            load_balancing: dict[str, Any] | None = None,
            instances: list[dict[str, Any]] = INSTANCES,
        ) -> OllamaPoolManager:
            pool = OllamaPoolManager(
                instances=instances, load_balancing=load_balancing, shared_state=shared, health_checks=False
            )
            closing.callback(pool.close_sync)
            pool.start()
            return pool

        yield make


def test_the_pool_keys_live_in_one_slot_served_by_another_node_than_the_seed(
    redis_cluster: LocalRedisCluster, pools: Any
) -> None:
    shared = _shared(redis_cluster)
    pool = pools(shared)
    keys = pool._shared.keys
    names = [*keys.instance("a"), keys.channel, keys.key("leader"), keys.key("facts", "a")]
    assert len({key_slot(name) for name in names}) == 1
    owner = redis_cluster.owner(keys.channel)
    assert redis_cluster.node_url(owner) != shared["url"]
    lease = pool.try_acquire(pool.route_request(MODEL))
    assert isinstance(lease, Lease)
    status = pool.status()["shared_state"]
    assert (status["up"], status["cluster"], status["outages"]) == (True, True, 0)
    pool.finish(lease, None)


async def test_two_pools_on_a_cluster_hold_one_global_cap(
    redis_cluster: LocalRedisCluster, ollama_emulators: Any
) -> None:
    (emulator,) = ollama_emulators(1, models=[MODEL], loaded=[MODEL], num_parallel=8, time_scale=0.05)
    shared = _shared(redis_cluster)
    instances = [{"id": "a", "url": emulator.url, "max_concurrent": 2}]
    options = {"shared_state": shared, "load_balancing": {"queue_timeout": 30}, "health_checks": False}
    async with (
        OllamaPoolProvider(instances=instances, **options) as one,
        OllamaPoolProvider(instances=instances, **options) as two,
    ):
        answers = await asyncio.gather(*(pool.chat(MODEL, HI) for pool in (one, two) for _ in range(6)))
        assert len(answers) == 12
        # From the server's own count: two slots pool-wide, not two per pool.
        assert emulator.max_concurrency_seen() == 2
        assert one.status()["shared_state"]["outages"] == two.status()["shared_state"]["outages"] == 0


def test_a_breaker_trip_in_one_pool_opens_it_in_the_other(
    redis_cluster: LocalRedisCluster, pools: Any
) -> None:
    shared = _shared(redis_cluster)
    breaker = {"circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 30}}
    first, second = pools(shared, breaker), pools({**shared, "refresh_interval": 0.02}, breaker)
    lease = first.try_acquire(first.route_request(MODEL))
    first.finish(lease, ConnectionError("refused"))

    # No call needed: the background refresh brings the open breaker.
    eventually(lambda: second.status()["instances"]["a"]["circuit_state"] == "open")


def test_a_release_in_one_pool_wakes_a_waiter_in_the_other(
    redis_cluster: LocalRedisCluster, pools: Any
) -> None:
    shared = _shared(redis_cluster)
    release_wakes_waiter(pools(shared), pools({**shared, "refresh_interval": 60}))


def test_one_pool_leads_the_health_probes_and_hands_over_when_it_closes(
    redis_cluster: LocalRedisCluster, pools: Any
) -> None:
    shared = _shared(redis_cluster, refresh_interval=0.02)
    both = pools(shared), pools(shared)

    # The election rides on each pool's refresh; whichever asked first leads, the other does not
    # probe. (Read without ticking: the test must not race the refresh threads' own ticks.)
    def leaders() -> list[OllamaPoolManager]:
        return [pool for pool in both if pool._shared.election.leader.leading]

    eventually(lambda: len(leaders()) == 1)
    (leading,) = leaders()
    other = both[1] if leading is both[0] else both[0]
    leader = leading._shared.election.leader
    assert leader.holder(leading._shared.client) == leader.token
    assert (leading._shared.should_probe(), other._shared.should_probe()) == (True, False)

    leading.close_sync()  # gives the key back: the other takes it on its next refresh
    eventually(lambda: other._shared.election.leader.leading)
    assert other._shared.should_probe()


def test_a_resharded_slot_is_followed_and_wakeups_cross_nodes(
    redis_cluster: LocalRedisCluster, pools: Any
) -> None:
    shared = _shared(redis_cluster)
    holder, waiter = pools(shared), pools({**shared, "refresh_interval": 60})
    channel = holder._shared.keys.channel
    lease = holder.try_acquire(holder.route_request(MODEL))  # keys exist: they move with the slot
    before = redis_cluster.owner(channel)
    target = next(i for i in range(redis_cluster.masters) if i != before)

    redis_cluster.move_slot(key_slot(channel), target)

    assert redis_cluster.owner(channel) == target
    holder.finish(lease, None)  # the old node answers MOVED; the client follows it
    # The waiter's subscriber still listens on the old node; the release script now publishes
    # on the new one, and the cluster bus carries the announcement across.
    release_wakes_waiter(holder, waiter)
    for pool in (holder, waiter):
        assert pool.status()["shared_state"]["up"] is True


async def test_the_node_holding_the_slot_dying_costs_no_call_and_sharing_resumes(
    redis_cluster: LocalRedisCluster, ollama_emulators: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (emulator,) = ollama_emulators(1, models=[MODEL], loaded=[MODEL], num_parallel=4)
    shared = _shared(redis_cluster, reconnect_interval=0.1)
    owner = redis_cluster.owner(Keys(shared["namespace"]).channel)
    # The node comes back with its slots but empty; for about 2 s it refuses keys (CLUSTERDOWN)
    # while it rejoins: the reconnect probe reads a key, so that is still the same outage.
    await outage_costs_no_call(
        emulator.url,
        shared,
        lambda: redis_cluster.kill(owner),
        lambda: redis_cluster.restart(owner),
        caplog,
    )


async def test_a_cluster_down_at_start_is_local_state_not_a_failed_pool(
    ollama_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # redis-py's cluster client connects while it is built: built on first use instead, inside
    # the store's error handling, so nothing listening is the usual fall-back.
    with _refused_port() as port:
        shared = {"url": f"redis://127.0.0.1:{port}", "cluster": True, "reconnect_interval": 0.1}
        caplog.set_level(logging.WARNING, logger="gleitzeit_llm.shared_state")
        async with OllamaPoolProvider(
            instances=[{"id": "a", "url": ollama_emulator.url}], shared_state=shared
        ) as pool:
            for _ in range(3):
                answer = await pool.chat(MODEL, HI)
                assert answer.pool.instance_id == "a"
            status = pool.status()["shared_state"]
            assert status["up"] is False
            assert "RedisClusterException" in status["last_error"] or "Connection" in status["last_error"]
    warnings = [r for r in caplog.records if r.name == "gleitzeit_llm.shared_state"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


@contextlib.contextmanager
def _refused_port() -> Iterator[int]:
    """A loopback port bound (so no one else takes it) but not listening: connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_failovers_to_a_replica_are_followed(
    redis_cluster: LocalRedisCluster, pools: Any, caplog: pytest.LogCaptureFixture
) -> None:
    shared = _shared(redis_cluster, reconnect_interval=0.1)
    both = pool, other = pools(shared), pools({**shared, "refresh_interval": 0.02})
    request = pool.route_request(MODEL)
    channel = pool._shared.keys.channel
    primary = redis_cluster.owner(channel)
    replica = redis_cluster.add_replica(primary)
    held = pool.try_acquire(request)
    assert isinstance(held, Lease)

    # A planned failover: the old primary hands over and answers MOVED from then on. (It pauses
    # its clients for a moment while the replica catches up: a command caught in the pause past
    # the timeout is a short outage, no failed call.)
    redis_cluster.failover(replica)
    assert redis_cluster.owner(channel) == replica
    lease = pool.try_acquire(request)
    assert isinstance(lease, Lease)
    eventually(lambda: other.status()["instances"]["a"]["active_requests"] == 2)  # the cap is still shared
    pool.finish(lease, None)
    eventually(lambda: all(p.status()["shared_state"]["up"] for p in both))

    # The new primary dies and the old one takes over: no failed call, then sharing resumes.
    outages = [p.status()["shared_state"]["outages"] for p in both]
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="gleitzeit_llm.shared_state")
    redis_cluster.kill(replica)
    try:
        for _ in range(3):
            lease = pool.try_acquire(request)
            assert isinstance(lease, Lease)
            pool.finish(lease, None)
        redis_cluster.failover(primary, takeover=True)
        eventually(lambda: all(p.status()["shared_state"]["up"] for p in both))
        # The lease held throughout was written back to the new primary: the cap holds again.
        eventually(lambda: other.status()["instances"]["a"]["active_requests"] == 1)
    finally:
        redis_cluster.restart(replica)  # back as a replica of the node that took over
    pool.finish(held, None)
    # One outage and one warning per pool (each stands for a process of its own here).
    assert [p.status()["shared_state"]["outages"] for p in both] == [n + 1 for n in outages]
    warnings = [
        r for r in caplog.records if r.name == "gleitzeit_llm.shared_state" and r.levelname == "WARNING"
    ]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]


def test_the_cli_reaches_a_cluster(
    redis_cluster: LocalRedisCluster,
    ollama_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # --shared-state replaces the URL only: the cluster flag from the environment stays.
    monkeypatch.setenv("GLEITZEIT_OLLAMA_INSTANCES", f"a:{ollama_emulator.url}")
    monkeypatch.setenv("GLEITZEIT_OLLAMA_SHARED_STATE_URL", "redis://127.0.0.1:9")
    monkeypatch.setenv("GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER", "true")
    seed = _shared(redis_cluster)["url"]
    assert main(["--shared-state", seed, "status", "--json"]) == 0
    shared = json.loads(capsys.readouterr().out)["shared_state"]
    assert (shared["up"], shared["cluster"], shared["url"]) == (True, True, seed)


def test_scripts_the_node_forgot_are_loaded_again(redis_cluster: LocalRedisCluster, pools: Any) -> None:
    # The release rides in a cluster pipeline: its NOSCRIPT comes back as a reply, not raised.
    pool = pools(_shared(redis_cluster))
    request = pool.route_request(MODEL)
    lease = pool.try_acquire(request)
    owner = redis_cluster.owner(pool._shared.keys.channel)
    for flush_before in ("release", "acquire"):
        with redis_cluster.admin(owner) as admin:
            admin.script_flush()
        if flush_before == "release":
            pool.finish(lease, None)
        else:
            lease = pool.try_acquire(request)
            assert isinstance(lease, Lease)
            pool.finish(lease, None)
    status = pool.status()
    assert status["instances"]["a"]["active_requests"] == 0
    assert (status["shared_state"]["up"], status["shared_state"]["outages"]) == (True, 0)


def test_acquire_and_release_are_one_round_trip_each_on_a_cluster(
    redis_cluster: LocalRedisCluster, pools: Any
) -> None:
    # Left to itself redis-py asks the server for a script's keys (COMMAND GETKEYS) before it
    # pipelines the script: one more round trip on every release.
    pool = pools(_shared(redis_cluster, refresh_interval=60))
    request = pool.route_request(MODEL)
    pool.finish(pool.try_acquire(request), None)  # the scripts are loaded, the slot map known
    running = [i for i, node in enumerate(redis_cluster.nodes) if node.running]
    for i in running:
        with redis_cluster.admin(i) as admin:
            admin.config_resetstat()
    for _ in range(10):
        pool.finish(pool.try_acquire(request), None)
    stats = {}
    for i in running:  # the key lookups would go to the seed node, the scripts to the slot's
        with redis_cluster.admin(i) as admin:
            stats[i] = admin.info("commandstats")
    assert stats[redis_cluster.owner(pool._shared.keys.channel)]["cmdstat_evalsha"]["calls"] == 20
    assert [(i, name) for i in running for name in stats[i] if name.startswith("cmdstat_command")] == []


def test_the_prompt_prefix_index_is_shared_on_a_cluster(redis_cluster: LocalRedisCluster, pools: Any) -> None:
    """The index's scripts are loaded (SCRIPT LOAD in the refresh pipeline) on the node of the
    pool's slot, not the seed: a prompt routed by one pool reaches the other's index."""
    from .test_prefixes import CACHE_TOKENS, matched, prompt, route
    from .test_prefixes import INSTANCES as TWO

    shared = _shared(redis_cluster)
    lb = {"strategy": "cache_aware", "prefix_cache_tokens": CACHE_TOKENS}
    first, second = pools(shared, lb, TWO), pools(shared, lb, TWO)
    conversation = prompt(1)
    where = route(first, conversation)

    eventually(lambda: matched(second, where, conversation) == len(conversation.blocks))
    assert route(second, prompt(1, chars=400)) == where
    assert second.status()["shared_state"]["outages"] == 0
