"""The wait for a slot across a whole call: one queue timeout, every attempt reported, fallback tried."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gleitzeit_llm import (
    AllInstancesFailedError,
    InstanceFailedError,
    OllamaPoolProvider,
    PoolSaturatedError,
)

MESSAGES = [{"role": "user", "content": "hi"}]


def provider(emulators: list[Any], models: list[list[str]] | None = None, **lb: Any) -> OllamaPoolProvider:
    instances = [
        {"id": f"e{i}", "url": e.url, "max_concurrent": 1, **({"models": models[i]} if models else {})}
        for i, e in enumerate(emulators)
    ]
    settings = {"retry_backoff_base": 0.001, "retry_backoff_max": 0.01, **lb}
    return OllamaPoolProvider(instances=instances, load_balancing=settings, health_checks=False)


async def test_one_queue_timeout_covers_every_attempt_and_the_error_lists_them_all(
    ollama_emulators: Any,
) -> None:
    failing, full = ollama_emulators(2, models=["llama3.2"])
    failing.set_faults(fail_next=1)  # answers 500 once
    async with provider([failing, full], queue_timeout=2.5) as pool:
        manager = pool.manager
        on_failing = manager.try_acquire(manager.route_request(exclude=["e1"]))
        on_full = manager.try_acquire(manager.route_request(exclude=["e0"]))
        # e0 frees after 2 s (and then fails the call); e1 stays full for good.
        asyncio.get_running_loop().call_later(2.0, manager.finish, on_failing)
        started = time.monotonic()
        with pytest.raises(AllInstancesFailedError) as caught:
            await pool.chat("llama3.2", MESSAGES)
        elapsed = time.monotonic() - started
        manager.finish(on_full)  # type: ignore[arg-type]
    error = caught.value
    # Before: 2 s waiting for e0, then the whole 2.5 s again for e1, and a bare PoolSaturatedError
    # that claimed a 2.5 s wait and dropped e0's 500.
    assert [type(e) for e in error.errors] == [InstanceFailedError, PoolSaturatedError]
    assert error.instances == ["e0", None]
    assert elapsed < 4.0
    saturated = str(error.errors[1])
    assert "the rest of the call's queue timeout (2.5s;" in saturated
    assert "spent waiting for earlier attempts" in saturated
    assert "all 2 attempt(s) for model 'llama3.2' failed" in str(error)


async def test_the_fallback_model_is_tried_when_the_requested_one_stays_full(ollama_emulators: Any) -> None:
    busy, spare = ollama_emulators(2, models=["llama3.2", "phi3"])
    async with provider([busy, spare], models=[["llama3.2"], ["phi3"]], queue_timeout=0.3) as pool:
        manager = pool.manager
        holder = manager.try_acquire(manager.route_request("llama3.2"))
        result = await pool.chat("llama3.2", MESSAGES, fallback_model="phi3")
        assert result.pool.fallback_used and result.pool.model == "phi3"
        assert result.pool.instance_id == "e1"
        assert result.pool.errors[0].startswith("PoolSaturatedError: ")
        # the sync face the same
        result = await asyncio.to_thread(pool.chat_sync, "llama3.2", MESSAGES, fallback_model="phi3")
        assert result.pool.fallback_used and result.pool.instance_id == "e1"
        # without a fallback a call that only waited still says so plainly
        with pytest.raises(PoolSaturatedError, match=r"for the queue timeout \(0\.3s\)"):
            await pool.chat("llama3.2", MESSAGES)
        manager.finish(holder)  # type: ignore[arg-type]
        assert pool.status()["active_requests"] == 0
