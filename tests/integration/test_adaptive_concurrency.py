"""Adaptive concurrency against emulated servers: the pool learns each server's parallelism from
the queue time it reports, and keeps the queue on its own side.

Three emulators run ``num_parallel`` 1, 2 and 4, and the pool is told ``max_concurrent: 8`` for
each: what a user who guessed does. Sixteen callers keep it busy (more than the 7 slots the
servers have, fewer than the 24 the pool would send). After a warm-up, the emulators' own request
logs say how long requests waited inside a server, as a share of how long they were served: by
Little's law, the server-side queue's mean length over the mean number in service.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gleitzeit_llm import OllamaPoolProvider

MODEL = "llama3.2"
MESSAGES = [{"role": "user", "content": "hi"}]
PARALLEL = (1, 2, 4)
# A call takes about 260 ms: 0.52 modelled seconds at time_scale 0.5. Long enough that the
# servers' slots, not this process's CPU (emulators and pool share it), are what calls wait for.
SERVICE = 0.52
EMULATOR = {"models": [MODEL], "loaded": [MODEL], "time_scale": 0.5, "tokens_per_second": 100.0, "ttft": 0.4}
CALLERS = 16


async def busy(pool: OllamaPoolProvider, calls: int) -> None:
    """``calls`` chat calls from CALLERS callers, each sending its next as soon as one returns."""
    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await pool.chat(MODEL, MESSAGES)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))


def server_queue(emulators: list[Any]) -> float:
    """Time the chat requests waited for a slot inside their servers over the time they were
    served there (modelled, from the emulators' logs)."""
    records = [r for e in emulators for r in e.requests_for("/api/chat")]
    assert records and all(r.finished for r in records)
    waited = sum(r.queue_duration or 0 for r in records)
    return waited / sum((r.prompt_eval_duration or 0) + (r.eval_duration or 0) for r in records)


async def run(ollama_emulators: Any, adaptive: bool) -> tuple[dict[str, Any], float]:
    emulators = [ollama_emulators(1, num_parallel=n, **EMULATOR)[0] for n in PARALLEL]
    instances = [
        {"id": f"np{n}", "url": e.url, "max_concurrent": 8} for n, e in zip(PARALLEL, emulators, strict=True)
    ]
    lb = {"adaptive_concurrency": adaptive}
    async with OllamaPoolProvider(instances=instances, load_balancing=lb, health_checks=False) as pool:
        await busy(pool, 40)  # learning
        for emulator in emulators:
            emulator.clear_log()
        await busy(pool, 70)  # learned
        status = pool.manager.status()
    return status, server_queue(emulators)


async def test_the_learned_limits_converge_to_each_servers_parallelism(ollama_emulators: Any) -> None:
    status, queued = await run(ollama_emulators, adaptive=True)
    limits = {i: info["concurrency_limits"] for i, info in status["instances"].items()}
    for n in PARALLEL:
        learned = limits[f"np{n}"]["llama3.2:latest"]
        # the servers' num_parallel, or one off while a rare probe above it is under way
        assert max(1, n - 1) <= learned <= n + 1, limits
    assert queued <= 0.1, queued  # the server-side queue stays near empty once learned


async def test_without_it_the_servers_queue_what_the_pool_sends(ollama_emulators: Any) -> None:
    status, queued = await run(ollama_emulators, adaptive=False)
    assert all(info["concurrency_limits"] is None for info in status["instances"].values())
    # 16 in flight on 7 slots: about as many wait inside the servers as are served there
    assert queued >= 0.5, queued


async def test_a_learned_limit_holds_calls_in_the_pools_queue_not_the_servers(ollama_emulators: Any) -> None:
    (emulator,) = ollama_emulators(1, num_parallel=1, **EMULATOR)
    instances = [{"id": "one", "url": emulator.url, "max_concurrent": 8}]
    lb = {"adaptive_concurrency": True}
    async with OllamaPoolProvider(instances=instances, load_balancing=lb, health_checks=False) as pool:
        # Bursts of 8 until it learned 1. The first usually does it (the second answer waited one
        # service time with two in flight: 2 x 1/2), unless the eight reached the server in
        # another order than they were sent; then the next burst, sent two at a time, does.
        limits = None
        for _ in range(4):
            await asyncio.gather(*(pool.chat(MODEL, MESSAGES) for _ in range(8)))
            limits = pool.manager.status()["instances"]["one"]["concurrency_limits"]
            if limits == {"llama3.2:latest": 1}:
                break
        assert limits == {"llama3.2:latest": 1}
        emulator.clear_log()
        await asyncio.gather(*(pool.chat(MODEL, MESSAGES) for _ in range(4)))
    assert emulator.max_concurrency_seen() == 1
    # Sent at once (max_concurrent 8), the four would wait 0 + 1 + 2 + 3 service times in the
    # server. Held in the pool, they wait only for the moment between a reply and its slot's
    # release, unless a probe above the learned limit falls on them (one in 16 windows here):
    # then two of them wait one service time each.
    waits = [(r.queue_duration or 0) / 1e9 / SERVICE for r in emulator.requests_for("/api/chat")]
    assert len(waits) == 4 and max(waits) < 1.5 and sum(waits) < 2.5, waits
