"""The Redis store against a real redis-server, with several pools in this process standing in
for processes (each pool has its own store, connections and process token)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis

from gleitzeit_llm import OllamaPoolManager
from gleitzeit_llm.manager import Lease
from gleitzeit_llm.routing.health import ProbeResult

from .checks import outage_costs_no_call, release_wakes_waiter
from .store_support import INSTANCES, MODEL, eventually


def _lease_or_none(got: Any) -> Lease | None:
    return got if isinstance(got, Lease) else None


def test_half_open_admits_its_probes_pool_wide_and_the_verdict_holds_for_all(pools: Any) -> None:
    breaker = {"failure_threshold": 1, "recovery_timeout": 0.2, "half_open_requests": 1}
    # "b" is routable but full throughout: with "a" open nothing is free (no panic routing).
    instances = [*INSTANCES, {"id": "b", "url": "http://127.0.0.1:10", "max_concurrent": 1, "tags": ["b"]}]
    first, second = (pools({"circuit_breaker": breaker}, instances) for _ in range(2))
    b_lease = first.try_acquire(first.route_request(MODEL, tags=["b"]))
    request = first.route_request(MODEL)
    lease = first.try_acquire(request)
    assert isinstance(lease, Lease)
    assert lease.instance_id == "a"
    first.finish(lease, ConnectionError("refused"))  # trips: open for everyone
    first._apply_probe(ProbeResult("a", ok=True))  # answering again: routable once half-open

    assert not isinstance(second.try_acquire(request), Lease)
    probe = eventually(lambda: _lease_or_none(first.try_acquire(request)))
    assert probe.probe
    # The one probe of the whole pool is out: the other process is refused, not given its own.
    refused = second.try_acquire(request)
    assert not isinstance(refused, Lease)
    assert "half-open" in refused.reason

    first.finish(probe, None)  # the probe succeeded: closed for everyone
    after = second.try_acquire(request)
    assert isinstance(after, Lease)
    assert not after.probe
    second.finish(after, None)
    first.finish(b_lease, None)


def test_a_release_in_one_process_wakes_a_waiter_in_another(pools: Any) -> None:
    release_wakes_waiter(pools(), pools(refresh_interval=60))  # only the announcement can wake it


def test_redis_restarted_empty_gets_back_the_leases_still_held(pools: Any, redis_server: Any) -> None:
    pool = pools(lease_ttl=0.6, reconnect_interval=0.1)
    other = pools()
    request = pool.route_request(MODEL)
    held = [pool.try_acquire(request) for _ in range(2)]
    raw = redis.Redis.from_url(redis_server.url)
    key = pool._shared.keys.leases("a")
    assert raw.zcard(key) == 2

    redis_server.restart()  # comes back empty
    eventually(lambda: raw.zcard(key) == 2)  # the renewal wrote them back
    eventually(lambda: other.status()["instances"]["a"]["active_requests"] == 2)
    assert not isinstance(other.try_acquire(request), Lease)  # the cap still holds pool-wide

    for lease in held:
        pool.finish(lease, None)
    assert raw.zcard(key) == 0


async def test_redis_down_falls_back_to_local_state_and_sharing_resumes(
    ollama_emulators: Any, redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (emulator,) = ollama_emulators(1, models=[MODEL], loaded=[MODEL], num_parallel=4)
    shared = {"url": redis_server.url, "reconnect_interval": 0.1}
    await outage_costs_no_call(emulator.url, shared, redis_server.kill, redis_server.start, caplog)


def test_a_breaker_tripped_in_one_process_shows_open_in_the_others(pools: Any) -> None:
    breaker = {"failure_threshold": 1, "recovery_timeout": 30}
    first, second = (
        pools({"circuit_breaker": breaker}),
        pools({"circuit_breaker": breaker}, refresh_interval=0.02),
    )
    lease = first.try_acquire(first.route_request(MODEL))
    first.finish(lease, ConnectionError("refused"))

    # No call needed: the background refresh brings the open breaker.
    eventually(lambda: second.status()["instances"]["a"]["circuit_state"] == "open")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_workers_forked_from_a_pool_never_started_take_tokens_of_their_own(redis_server: Any) -> None:
    # gunicorn --preload: the master builds the pool and never starts it; each worker's leases
    # must be its own, or two workers' lease ids collide in Redis and the cap no longer holds.
    manager = OllamaPoolManager(
        instances=INSTANCES, shared_state={"url": redis_server.url}, health_checks=False
    )
    parent_token = manager._state.held.token  # type: ignore[attr-defined]
    tokens = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: take a slot, report the member it used, leave at once
            try:
                lease = manager.try_acquire(manager.route_request(MODEL))
                token = manager._state.held.token  # type: ignore[attr-defined]
                os.write(write, f"{token} {int(isinstance(lease, Lease))}".encode())
            finally:
                os._exit(0)
        os.close(write)
        token, took = os.read(read, 1000).decode().split()
        os.close(read)
        os.waitpid(pid, 0)
        assert took == "1"
        tokens.append(token)
    assert len({parent_token, *tokens}) == 3
    # and Redis holds two leases, one per worker, not one overwritten by the other
    assert manager.status()["instances"]["a"]["active_requests"] == 0  # the parent holds none
    client = redis.Redis.from_url(redis_server.url)
    (lease_key,) = client.keys("gleitzeit:*:leases:a")
    assert client.zcard(lease_key) == 2
    client.close()
    manager.close_sync()
