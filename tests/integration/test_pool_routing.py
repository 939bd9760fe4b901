"""Strategies against real emulated servers on loopback: what each strategy promises, measured
from the pool's answers and the emulators' own request logs."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from gleitzeit_llm import OllamaPoolManager, OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator

MESSAGES = [{"role": "user", "content": "hello"}]


def pool_for(emulators: list[OllamaEmulator], ids: list[str] | None = None, **lb: Any) -> OllamaPoolProvider:
    ids = ids or [f"e{i}" for i in range(len(emulators))]
    instances = [{"id": i, "url": e.url, "max_concurrent": 4} for i, e in zip(ids, emulators, strict=True)]
    return OllamaPoolProvider(
        instances=instances,
        load_balancing={"health_check_interval": 5, "retry_backoff_base": 0.001, **lb},
    )


def served(emulators: list[OllamaEmulator], ids: list[str]) -> dict[str, int]:
    return {i: len(e.requests_for("/api/chat")) for i, e in zip(ids, emulators, strict=True)}


async def test_round_robin_rotates_exactly(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(4, models=["llama3.2"], loaded=["llama3.2"], time_scale=0)
    ids = ["a", "b", "c", "d"]
    async with pool_for(emulators, ids, strategy="round_robin") as pool:
        order = [(await pool.chat("llama3.2", MESSAGES)).pool.instance_id for _ in range(12)]
    assert order == ids * 3
    assert served(emulators, ids) == {i: 3 for i in ids}


async def test_weighted_matches_the_weights_over_10000_picks(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(3, models=["llama3.2"], time_scale=0)
    weights = {"big": 5.0, "mid": 3.0, "small": 2.0}
    instances = [
        {"id": i, "url": e.url, "weight": w} for (i, w), e in zip(weights.items(), emulators, strict=True)
    ]
    async with OllamaPoolManager(instances=instances, strategy="weighted") as pool:
        assert (await pool.get_pool_status())["healthy_instances"] == 3
        picks: Counter[str] = Counter()
        for _ in range(10_000):
            async with pool.lease(model="llama3.2") as lease:
                picks[lease.instance_id] += 1
    for instance_id, weight in weights.items():
        assert abs(picks[instance_id] / 10_000 - weight / 10) < 0.03, picks
    # and real traffic below saturation follows the same weights (1,000 calls: mid's expected lead
    # over small, 100, is 4.5 standard deviations; with 300 it was 2.5, a failure in ~150 runs)
    async with OllamaPoolProvider(instances=instances, load_balancing={"strategy": "weighted"}) as provider:
        for _ in range(1000):
            await provider.chat("llama3.2", MESSAGES)
    counts = served(emulators, list(weights))
    assert counts["big"] > counts["mid"] > counts["small"], counts


async def test_least_loaded_spreads_1000_concurrent_requests(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(
        # answers long enough to overlap at the server even when the client is the bottleneck
        # (not only in the opening burst: initialize() leaves one warm connection per instance,
        # so each instance's first request goes out before the others have connected)
        4,
        models=["llama3.2"],
        loaded=["llama3.2"],
        num_parallel=64,
        time_scale=0.3,
    )
    ids = ["a", "b", "c", "d"]
    async with pool_for(emulators, ids, strategy="least_loaded") as pool:
        results = await asyncio.gather(*(pool.chat("llama3.2", MESSAGES) for _ in range(1000)))
        assert pool.status()["active_requests"] == 0
    by_instance = Counter(r.pool.instance_id for r in results)
    assert sum(by_instance.values()) == 1000
    assert max(by_instance.values()) <= 300, by_instance
    # the pool, not the server, bounds concurrency: never more than max_concurrent at once
    assert all(e.max_concurrency_seen() <= 4 for e in emulators)
    assert max(e.max_concurrency_seen() for e in emulators) == 4


async def test_latency_based_avoids_a_ten_times_slower_instance_but_probes_new_ones(
    ollama_emulators: Any,
) -> None:
    # Modelled times large enough (13 ms vs 130 ms a call) that the client's own noise is small.
    fast, slow = ollama_emulators(
        2, models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, time_scale=0.05
    )
    slow.set_faults(slow_factor=10.0)
    async with pool_for([fast, slow], ["fast", "slow"], strategy="latency_based") as pool:

        async def worker(n: int) -> list[str]:
            return [(await pool.chat("llama3.2", MESSAGES)).pool.instance_id for _ in range(n)]

        results = [i for batch in await asyncio.gather(*(worker(50) for _ in range(4))) for i in batch]
        share = results.count("slow") / len(results)
        assert share < 0.10, Counter(results)

        (newcomer,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"], time_scale=0.01)
        pool.manager.add_instance({"id": "new", "url": newcomer.url})
        later = [(await pool.chat("llama3.2", MESSAGES)).pool.instance_id for _ in range(5)]
    assert "new" in later  # an instance without data is explored, never starved
    assert len(newcomer.requests_for("/api/chat")) >= 1


async def test_model_affinity_causes_no_cold_load_while_the_hot_replica_has_room(
    ollama_emulators: Any,
) -> None:
    hot, cold1, cold2 = ollama_emulators(3, models=["llama3.2", "qwen3"], num_parallel=4, load_time=2.0)
    hot.load("llama3.2")
    instances = [
        {"id": "hot", "url": hot.url, "max_concurrent": 2},
        {"id": "cold1", "url": cold1.url, "max_concurrent": 2},
        {"id": "cold2", "url": cold2.url, "max_concurrent": 2},
    ]
    async with OllamaPoolProvider(instances=instances, load_balancing={"strategy": "model_affinity"}) as pool:
        for _ in range(10):  # at most two at a time: the hot replica always has a free slot
            await asyncio.gather(pool.chat("llama3.2", MESSAGES), pool.chat("llama3.2", MESSAGES))
        assert cold1.load_count() == 0 and cold2.load_count() == 0
        assert hot.load_count() == 0
        assert len(hot.requests_for("/api/chat")) == 20
        # four at once do not fit on the hot replica: two wait for its slots (affinity_wait)
        # rather than load the model elsewhere
        results = await asyncio.gather(*(pool.chat("llama3.2", MESSAGES) for _ in range(4)))
    assert {r.pool.instance_id for r in results} == {"hot"}
    assert cold1.load_count() == 0 and cold2.load_count() == 0


async def test_model_affinity_overflows_at_once_with_affinity_wait_zero(ollama_emulators: Any) -> None:
    hot, cold = ollama_emulators(2, models=["llama3.2"], num_parallel=4, load_time=2.0)
    hot.load("llama3.2")
    instances = [{"id": "hot", "url": hot.url, "max_concurrent": 2}, {"id": "cold", "url": cold.url}]
    lb = {"strategy": "model_affinity", "affinity_wait": 0}
    async with OllamaPoolProvider(instances=instances, load_balancing=lb) as pool:
        results = await asyncio.gather(*(pool.chat("llama3.2", MESSAGES) for _ in range(4)))
    assert {r.pool.instance_id for r in results} == {"hot", "cold"}
    assert cold.load_count() == 1


async def test_model_affinity_loads_elsewhere_once_affinity_wait_is_over(ollama_emulators: Any) -> None:
    # The hot replica's one slot is held by a hanging answer: the waiting call gives up on it
    # after affinity_wait and loads the model on the other instance.
    hot, cold = ollama_emulators(2, models=["llama3.2"], num_parallel=4, load_time=0.5)
    hot.load("llama3.2")
    instances = [{"id": "hot", "url": hot.url, "max_concurrent": 1}, {"id": "cold", "url": cold.url}]
    lb = {"strategy": "model_affinity", "affinity_wait": 0.05}
    async with OllamaPoolProvider(instances=instances, load_balancing=lb) as pool:
        hot.set_faults(hang=True)
        routed = asyncio.Event()
        pool.events.subscribe(lambda event: routed.set() if event.kind == "routing_decision" else None)
        held = asyncio.ensure_future(pool.chat("llama3.2", MESSAGES))
        await routed.wait()  # the held call has the hot replica's slot
        moved = await pool.chat("llama3.2", MESSAGES)
        hot.clear_faults()
        await held
    assert moved.pool.instance_id == "cold" and cold.load_count() == 1


async def test_tags_route_to_the_tagged_instance(ollama_emulators: Any) -> None:
    cpu, gpu = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    instances = [
        {"id": "cpu", "url": cpu.url, "tags": ["cpu"]},
        {"id": "gpu", "url": gpu.url, "tags": ["GPU", "large"]},
    ]
    async with OllamaPoolProvider(instances=instances) as pool:
        for _ in range(5):
            result = await pool.execute(
                "llm/chat", {"model": "llama3.2", "messages": MESSAGES, "require_gpu": True}
            )
            assert result["pool"]["instance_id"] == "gpu"
        tagged = await pool.chat("llama3.2", MESSAGES, instance_tags=["large"])
    assert tagged.pool.instance_id == "gpu"
    assert len(cpu.requests_for("/api/chat")) == 0
    assert len(gpu.requests_for("/api/chat")) == 6
    # hints never reach Ollama
    assert all(
        "require_gpu" not in r.body and "instance_tags" not in r.body for r in gpu.requests_for("/api/chat")
    )


async def test_priority_tiers_use_the_backup_only_when_the_primary_is_full_or_down(
    ollama_emulators: Any,
) -> None:
    primary, backup = ollama_emulators(
        2, models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, time_scale=0.01
    )
    instances = [
        {"id": "primary", "url": primary.url, "priority": 1, "max_concurrent": 2},
        {"id": "backup", "url": backup.url, "priority": 2, "max_concurrent": 2},
    ]
    async with OllamaPoolProvider(instances=instances, load_balancing={"health_check_interval": 0.2}) as pool:
        for _ in range(4):
            assert (await pool.chat("llama3.2", MESSAGES)).pool.instance_id == "primary"
        results = await asyncio.gather(*(pool.chat("llama3.2", MESSAGES) for _ in range(4)))
        assert Counter(r.pool.instance_id for r in results) == {"primary": 2, "backup": 2}
        primary.stop()
        assert (await pool.chat("llama3.2", MESSAGES)).pool.instance_id == "backup"


async def test_health_probes_never_load_a_model(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2", "qwen3"])
    async with OllamaPoolManager(instances=[emu.url], health_check_interval=0.05) as pool:
        for _ in range(5):
            await pool.acheck_health_now()
        status = await pool.get_pool_status()
    assert emu.load_count() == 0
    assert emu.loaded_models() == []
    assert {r.path for r in emu.requests} <= {"/api/version", "/api/tags", "/api/ps"}
    (info,) = status["instances"].values()
    assert info["state"] == "healthy"
    assert info["models_installed"] == ["llama3.2:latest", "qwen3:latest"]


async def test_a_cold_load_refreshes_residency_at_once(ollama_emulators: Any) -> None:
    # One model fits: loading llama3.2 evicts qwen3. The pool must not go on believing qwen3 is
    # loaded until the next health round (an hour away here).
    (box,) = ollama_emulators(1, models=["llama3.2", "qwen3"], max_loaded_models=1, load_time=0.5)
    box.load("qwen3")
    lb = {"strategy": "model_affinity", "health_check_interval": 3600}
    async with OllamaPoolProvider(instances=[{"id": "box", "url": box.url}], load_balancing=lb) as pool:
        inst = pool.manager.get("box")
        assert set(inst.loaded_models) == {"qwen3:latest"}  # from the first probe round
        monitor = pool.manager._monitor
        rounds = monitor.rounds
        await pool.chat("llama3.2", MESSAGES)
        assert inst.metrics.cold_loads == 1
        while monitor.rounds == rounds:  # noqa: ASYNC110 - the round runs on the monitor's thread
            await asyncio.sleep(0.01)
        assert set(inst.loaded_models) == {"llama3.2:latest"}


async def test_a_slow_reader_does_not_make_the_server_look_slow(ollama_emulators: Any) -> None:
    # latency_based must measure the server (time to the first chunk, the server's own
    # eval_duration per token), never the pace at which a caller reads a stream.
    a, b = ollama_emulators(
        2, models=["llama3.2"], loaded=["llama3.2"], reply_tokens=20, tokens_per_second=1000.0, ttft=0.01
    )
    instances = [{"id": "a", "url": a.url, "tags": ["a"]}, {"id": "b", "url": b.url, "tags": ["b"]}]
    pool = OllamaPoolProvider(
        instances=instances, load_balancing={"strategy": "latency_based"}, health_checks=False
    )
    async with pool:
        for tag in ("a", "b"):
            await pool.chat("llama3.2", MESSAGES, instance_tags=[tag])
        async with pool.stream_chat("llama3.2", MESSAGES, instance_tags=["a"]) as stream:
            async for _ in stream:
                await asyncio.sleep(0.05)  # the caller, not the server, is slow
        now = time.monotonic()
        expected = pool.manager._router.expected_tokens
        slow_reader = pool.manager.get("a").latency_estimate(now, expected)
        other = pool.manager.get("b").latency_estimate(now, expected)
        assert slow_reader is not None and other is not None
        assert slow_reader < 3 * other, (slow_reader, other)
