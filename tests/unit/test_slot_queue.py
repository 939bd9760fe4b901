"""The wait for a free slot: first come, first served, no polling, one order for sync and async."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from gleitzeit_llm import (
    InstanceBusyError,
    InstanceFailedError,
    OllamaPoolProvider,
    PoolSaturatedError,
    SyncCallInEventLoopError,
)
from gleitzeit_llm.manager import Lease, OllamaPoolManager
from gleitzeit_llm.routing.health import ProbeResult


def manager(*limits: int, **lb: Any) -> OllamaPoolManager:
    instances = [
        {"id": f"i{k}", "url": f"http://127.0.0.1:{20000 + k}", "max_concurrent": limit}
        for k, limit in enumerate(limits)
    ]
    return OllamaPoolManager(instances=instances, health_checks=False, load_balancing=lb)


def count_pushes(pool: OllamaPoolManager) -> threading.Semaphore:
    """A semaphore released each time a caller joins the queue (so tests know the arrival order)."""
    joined = threading.Semaphore(0)
    push = pool._queue.push

    def counted(waiter: Any) -> None:
        push(waiter)
        joined.release()

    pool._queue.push = counted  # type: ignore[method-assign]
    return joined


async def test_waiters_are_served_in_arrival_order_however_long_they_wait() -> None:
    # The case: one slot, eight calls arriving 0.1 s apart. Waiting must not cost a
    # waiter its place (the old code re-queued it at the tail every 0.25 s).
    pool = manager(1)
    holder = await pool.acquire(pool.route_request())
    served: list[int] = []

    async def call(index: int) -> None:
        lease = await pool.acquire(pool.route_request(), timeout=30)
        served.append(index)
        pool.finish(lease)

    tasks = []
    for index in range(8):
        tasks.append(asyncio.ensure_future(call(index)))
        await asyncio.sleep(0.1)  # the workload: arrivals 0.1 s apart
    assert pool.status()["waiting_requests"] == 8
    pool.finish(holder)
    await asyncio.gather(*tasks)
    assert served == list(range(8))
    assert pool.status()["waiting_requests"] == 0


async def test_sync_and_async_waiters_share_one_order() -> None:
    pool = manager(1)
    joined = count_pushes(pool)
    holder = pool.try_acquire(pool.route_request())
    assert isinstance(holder, Lease)
    served: list[str] = []
    lock = threading.Lock()

    def serve(name: str, lease: Lease) -> None:
        with lock:
            served.append(name)
        pool.finish(lease)

    async def async_call(name: str) -> None:
        serve(name, await pool.acquire(pool.route_request(), timeout=30))

    def sync_call(name: str) -> None:
        serve(name, pool.acquire_sync(pool.route_request(), timeout=30))

    tasks: list[asyncio.Future[None]] = []
    threads: list[threading.Thread] = []
    for index in range(8):
        name = f"{'sync' if index % 2 else 'async'}-{index}"
        if index % 2:
            threads.append(threading.Thread(target=sync_call, args=(name,)))
            threads[-1].start()
        else:
            tasks.append(asyncio.ensure_future(async_call(name)))
        assert await asyncio.to_thread(joined.acquire, True, 10)  # it is in the queue now
    pool.finish(holder)
    await asyncio.gather(*tasks)
    for thread in threads:
        await asyncio.to_thread(thread.join, 10)
    assert served == [f"{'sync' if i % 2 else 'async'}-{i}" for i in range(8)]


async def test_waiting_does_no_work_until_something_changes() -> None:
    pool = manager(1)
    holder = await pool.acquire(pool.route_request())
    tasks = [asyncio.ensure_future(pool.acquire(pool.route_request(), timeout=30)) for _ in range(500)]
    await asyncio.sleep(0)  # every task has joined the queue
    assert pool.status()["waiting_requests"] == 500
    attempts = 0
    try_acquire = pool.try_acquire

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        return try_acquire(*args, **kwargs)

    pool.try_acquire = counted  # type: ignore[method-assign]
    await asyncio.sleep(0.6)  # the workload: time passes, nothing is released
    assert attempts == 0  # no waiter re-checked on its own (the old code polled every 0.25 s)
    pool.finish(holder)  # the first success also makes the instance healthy: a full hand-out
    first = await tasks[0]
    attempts = 0
    pool.finish(first)  # a plain release: one routing attempt, one waiter served
    assert attempts == 1
    pool.finish(await tasks[1])
    assert pool.status()["waiting_requests"] == 497
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert (pool.status()["waiting_requests"], pool.status()["active_requests"]) == (0, 0)


async def test_a_freed_slot_goes_to_the_oldest_waiter_that_can_use_it() -> None:
    # i0 serves only "gpu" requests; an older gpu waiter must not block a younger plain one
    # when the freed slot is on i1, and the freed gpu slot goes to the gpu waiter.
    pool = OllamaPoolManager(
        instances=[
            {"id": "gpu", "url": "http://127.0.0.1:20000", "max_concurrent": 1, "tags": ["gpu"]},
            {"id": "cpu", "url": "http://127.0.0.1:20001", "max_concurrent": 1},
        ],
        health_checks=False,
    )
    on_gpu = await pool.acquire(pool.route_request(tags=["gpu"]))
    on_cpu = await pool.acquire(pool.route_request(exclude=["gpu"]))
    gpu_waiter = asyncio.ensure_future(pool.acquire(pool.route_request(tags=["gpu"]), timeout=30))
    await asyncio.sleep(0)
    any_waiter = asyncio.ensure_future(pool.acquire(pool.route_request(exclude=["gpu"]), timeout=30))
    await asyncio.sleep(0)
    pool.finish(on_cpu)
    assert (await any_waiter).instance_id == "cpu"
    assert not gpu_waiter.done()
    pool.finish(on_gpu)
    assert (await gpu_waiter).instance_id == "gpu"


async def test_a_busy_mark_running_out_wakes_a_waiter_at_that_moment() -> None:
    pool = manager(1, queue_timeout=30)
    lease = await pool.acquire(pool.route_request())
    waiter = asyncio.ensure_future(pool.acquire(pool.route_request()))
    await asyncio.sleep(0)
    started = time.monotonic()
    pool.finish(lease, InstanceBusyError("busy", retry_after=0.3))  # free, but busy for 0.3 s
    assert not waiter.done()
    got = await asyncio.wait_for(waiter, 10)
    assert got.instance_id == "i0"
    assert time.monotonic() - started >= 0.25  # not before the instance said it could take more


async def test_a_breaker_turning_half_open_wakes_a_waiter() -> None:
    pool = manager(1, 1, queue_timeout=30, circuit_breaker={"failure_threshold": 1, "recovery_timeout": 0.3})
    broken = await pool.acquire(pool.route_request(exclude=["i1"]))
    assert broken.instance_id == "i0"
    full = await pool.acquire(pool.route_request())
    assert full.instance_id == "i1"
    pool.finish(broken, InstanceFailedError("boom"))  # i0's breaker opens: i0 is out for 0.3 s
    pool._apply_probe(ProbeResult("i0", ok=True))  # its health check answers: only the breaker waits
    waiter = asyncio.ensure_future(pool.acquire(pool.route_request()))
    await asyncio.sleep(0)
    assert not waiter.done()
    got = await asyncio.wait_for(waiter, 10)  # i1 stays full: only the breaker's timer can help
    assert got.instance_id == "i0" and got.probe


async def test_a_waiter_cancelled_after_a_slot_was_handed_to_it_passes_the_slot_on() -> None:
    pool = manager(1)
    holder = await pool.acquire(pool.route_request())
    first = asyncio.ensure_future(pool.acquire(pool.route_request(), timeout=30))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(pool.acquire(pool.route_request(), timeout=30))
    await asyncio.sleep(0)
    pool.finish(holder)  # handed to `first`, which has not run yet
    first.cancel()
    lease = await asyncio.wait_for(second, 10)
    assert first.cancelled()
    assert pool.status()["active_requests"] == 1 and pool.status()["waiting_requests"] == 0
    pool.finish(lease)
    assert pool.status()["active_requests"] == 0


async def test_a_timed_out_waiter_leaves_and_says_how_long_it_waited() -> None:
    pool = manager(1, queue_timeout=30)
    await pool.acquire(pool.route_request())
    with pytest.raises(PoolSaturatedError, match=r"for the queue timeout \(0\.2s\)"):
        await pool.acquire(pool.route_request(), timeout=0.2)
    assert pool.status()["waiting_requests"] == 0


# -- sync twins on an event-loop thread ---------------------------------------------------------


async def test_sync_twins_on_an_event_loop_thread_fail_at_once_naming_the_async_method() -> None:
    provider = OllamaPoolProvider(
        instances=[{"id": "i0", "url": "http://127.0.0.1:20000", "max_concurrent": 1}],
        load_balancing={"queue_timeout": 30},
        health_checks=False,
    )
    pool = provider.manager
    holder = await pool.acquire(pool.route_request())  # an async call holds the only slot
    messages = [{"role": "user", "content": "hi"}]
    started = time.monotonic()
    cases = [
        (lambda: provider.chat_sync("llama3.2", messages), r"await provider\.chat\("),
        (lambda: provider.generate_sync("llama3.2", "hi"), r"await provider\.generate\("),
        (lambda: provider.embed_sync("nomic-embed-text", "hi"), r"await provider\.embed\("),
        (lambda: provider.stream_chat_sync("llama3.2", messages), r"provider\.stream_chat\("),
        (lambda: provider.stream_generate_sync("llama3.2", "hi"), r"provider\.stream_generate\("),
        (
            lambda: provider.execute_sync("llm/chat", {"model": "llama3.2", "messages": messages}),
            r"await provider\.execute\(",
        ),
        (lambda: pool.acquire_sync(pool.route_request()), r"await pool\.acquire\("),
        (lambda: pool.lease_sync().__enter__(), r"async with pool\.lease\("),
    ]
    for run, names in cases:
        with pytest.raises(SyncCallInEventLoopError, match=names):
            run()
    assert time.monotonic() - started < 5  # not the 30 s queue timeout
    assert pool.status()["waiting_requests"] == 0
    pool.finish(holder)
    # the same calls in a worker thread are fine
    lease = await asyncio.to_thread(pool.acquire_sync, pool.route_request())
    pool.finish(lease)
