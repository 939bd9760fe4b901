"""Behaviour the single-server and the cluster tests both check: a release in one pool waking a
waiter in another, and an outage of the shared state costing no call."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gleitzeit_llm import OllamaPoolManager, OllamaPoolProvider
from gleitzeit_llm.manager import Lease
from gleitzeit_llm.observability.prometheus import instrument

MODEL = "llama3.2"


def eventually(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``condition`` until it is truthy (its value), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def release_wakes_waiter(holder: OllamaPoolManager, waiter: OllamaPoolManager) -> None:
    """Fill the cap (2) from ``holder``, queue a call in ``waiter``, release one slot: the waiter
    gets it (give the waiter a slow refresh: then only the announcement can wake it)."""
    request = holder.route_request(MODEL)
    held = [holder.try_acquire(request) for _ in range(2)]
    assert all(isinstance(lease, Lease) for lease in held)
    eventually(lambda: waiter._shared._subscriber.subscribed.is_set())
    got: list[Lease] = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire_sync(request, timeout=10)))
    thread.start()
    eventually(lambda: waiter.status()["waiting_requests"] == 1)

    holder.finish(held[0], None)

    thread.join(timeout=10)
    assert len(got) == 1
    waiter.finish(got[0], None)
    holder.finish(held[1], None)


async def outage_costs_no_call(
    emulator_url: str,
    shared: dict[str, Any],
    kill: Callable[[], None],
    bring_back: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pool on ``shared`` answers calls while ``kill()`` has taken its shared state away
    (local state, ``gleitzeit_shared_state_up`` 0) and shares again after ``bring_back()`` (run
    in a thread), with one warning and one outage in all."""
    registry = CollectorRegistry()
    caplog.set_level(logging.WARNING, logger="gleitzeit_llm.shared_state")
    hi = [{"role": "user", "content": "hi"}]
    async with OllamaPoolProvider(
        instances=[{"id": "a", "url": emulator_url}], shared_state=shared, health_checks=False
    ) as pool:
        metrics = instrument(pool, registry)
        await pool.chat(MODEL, hi)
        assert registry.get_sample_value("gleitzeit_shared_state_up") == 1.0

        kill()
        try:
            for _ in range(5):
                answer = await pool.chat(MODEL, hi)
                assert answer.pool.instance_id == "a"
            assert pool.status()["shared_state"]["up"] is False
            assert registry.get_sample_value("gleitzeit_shared_state_up") == 0.0
        finally:
            await asyncio.to_thread(bring_back)
        await asyncio.to_thread(eventually, lambda: pool.status()["shared_state"]["up"])
        await pool.chat(MODEL, hi)
        assert registry.get_sample_value("gleitzeit_shared_state_up") == 1.0
        assert pool.status()["shared_state"]["outages"] == 1
        warnings = [r for r in caplog.records if r.name == "gleitzeit_llm.shared_state"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        metrics.close()
