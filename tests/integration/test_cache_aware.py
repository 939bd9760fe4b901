"""cache_aware and session_id against emulators with Ollama's per-slot prompt cache: what the
servers report (their request logs) says whether conversations found their prefix."""

from __future__ import annotations

import random
from typing import Any

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator

MODEL = "llama3.2"


def emulators_with_cache(make: Any, n: int = 4) -> list[OllamaEmulator]:
    # Modelled durations with time_scale 0: exact prompt times, no real waiting.
    return make(
        n,
        models=[MODEL],
        loaded=[MODEL],
        num_parallel=2,
        time_scale=0,
        ttft=0.02,
        prompt_tokens_per_second=1000.0,
    )


def pool_for(emulators: list[OllamaEmulator], **lb: Any) -> OllamaPoolProvider:
    instances = [{"id": f"e{i}", "url": e.url, "max_concurrent": 2} for i, e in enumerate(emulators)]
    return OllamaPoolProvider(instances=instances, load_balancing={"health_check_interval": 60, **lb})


def context(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(f"fact{rng.randrange(10**6)}" for _ in range(400))


async def converse(pool: OllamaPoolProvider, seed: int, turns: int, **hints: Any) -> list[str]:
    """One conversation, turn after turn; returns the instance of every turn."""
    history: list[dict[str, Any]] = [{"role": "system", "content": context(seed)}]
    where = []
    for turn in range(turns):
        history.append({"role": "user", "content": f"question {turn} about {seed}?"})
        reply = await pool.chat(MODEL, list(history), **hints)
        where.append(reply.pool.instance_id)
        history.append({"role": "assistant", "content": reply.message.content})
    return where


def cached_share(emulators: list[OllamaEmulator]) -> float:
    records = [r for e in emulators for r in e.requests_for("/api/chat")]
    cached = sum(r.cached_tokens or 0 for r in records)
    return cached / sum(r.prompt_eval_count or 0 for r in records)


async def interleaved(pool: OllamaPoolProvider, conversations: int, turns: int) -> None:
    """Conversations taking turns one after another (each turn sees the others' traffic)."""
    histories = [[{"role": "system", "content": context(100 + n)}] for n in range(conversations)]
    for turn in range(turns):
        for n, history in enumerate(histories):
            history.append({"role": "user", "content": f"question {turn} of {n}?"})
            reply = await pool.chat(MODEL, list(history))
            history.append({"role": "assistant", "content": reply.message.content})


async def test_a_conversation_stays_on_the_server_that_has_its_prefix(ollama_emulators: Any) -> None:
    emulators = emulators_with_cache(ollama_emulators)
    async with pool_for(emulators, strategy="cache_aware") as pool:
        for seed in range(4):
            where = await converse(pool, seed, turns=4)
            assert len(set(where)) == 1, where
        status = pool.manager.status()
    # Every turn after the first found its prefix cached: the servers say so.
    records = [r for e in emulators for r in e.requests_for("/api/chat")]
    assert sum(1 for r in records if (r.cached_tokens or 0) > 0.9 * (r.prompt_eval_count or 0)) == 4 * 3
    # ... and the pool learned it from what they reported.
    rates = [info["prompt_cache_hit_rate"] for info in status["instances"].values()]
    assert any(rate is not None and rate > 0.5 for rate in rates), rates


async def test_cache_aware_hits_the_cache_more_often_than_least_loaded(ollama_emulators: Any) -> None:
    # Four conversations taking turns over four servers. Ollama's cache (OLLAMA_MULTIUSER_CACHE
    # off) gives a new prompt the free slot with the longest common prefix, so a server whose
    # requests never overlap keeps one conversation: cache_aware gives each its own server.
    shares = {}
    for strategy in ("least_loaded", "cache_aware"):
        emulators = emulators_with_cache(ollama_emulators)
        async with pool_for(emulators, strategy=strategy) as pool:
            await interleaved(pool, conversations=4, turns=4)
        shares[strategy] = cached_share(emulators)
    assert shares["cache_aware"] > 0.6
    assert shares["cache_aware"] > shares["least_loaded"] + 0.2, shares


async def test_a_session_id_keeps_a_conversation_on_one_server_under_any_strategy(
    ollama_emulators: Any,
) -> None:
    emulators = emulators_with_cache(ollama_emulators)
    async with pool_for(emulators, strategy="round_robin") as pool:
        homes = {seed: set(await converse(pool, seed, turns=3, session_id=f"s{seed}")) for seed in range(6)}
        plain = await converse(pool, 99, turns=4)
    assert all(len(home) == 1 for home in homes.values()), homes
    assert len(set(plain)) > 1  # without the hint, round robin moves it
