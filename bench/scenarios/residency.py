"""Scenario 4, model residency: three instances, three models, one model resident per instance.

Every instance has all three models installed but room for one (``max_loaded_models=1``, as a
GPU that fits one model), and starts with a different one loaded. A realistic cold load (4 s
modelled, a 3-8B model from SSD) against a service time of 0.5 s modelled; the emulators run at
``time_scale`` 0.05 (a load takes 0.2 s of real time and everything else is 20x faster too). Requests for the
three models arrive open-loop (Poisson, model picked at random, the same seeded sequence for
every strategy) at a load the three resident replicas can carry. Before each strategy, every
emulator is reset to its starting model and a fresh pool is built (it learns residency from
``/api/ps`` in its first health round).

A cold load is *avoidable* when, at the moment it started, another instance had that model
resident and fewer than ``max_concurrent`` requests in flight: that is the target's "no cold load
while a loaded replica has a free slot". It is reconstructed afterwards from the emulators'
request logs (arrival, end, model, cold load) on one wall clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench._util import (
    EVERY_STRATEGY,
    MESSAGES,
    Sample,
    emulators,
    instance_list,
    latency_summary,
    log,
    open_loop,
    pool_sample,
    spread,
)

MODELS = ["llama3.2:latest", "qwen3:latest", "mistral:latest"]
STRATEGIES = list(EVERY_STRATEGY)

PARAMS = {
    "full": {
        "runs": 3,
        "strategies": STRATEGIES,
        "rate": 30.0,
        "requests": 72,
        "max_concurrent": 2,
        "time_scale": 0.05,
        "load_time": 4.0,
        "ttft": 0.2,
        "tokens_per_second": 40.0,
        "reply_tokens": 12,
        "timeout": 60.0,
    },
    "quick": {
        "runs": 1,
        "strategies": ["round_robin", "model_affinity"],
        "rate": 30.0,
        "requests": 40,
        "max_concurrent": 2,
        "time_scale": 0.05,
        "load_time": 4.0,
        "ttft": 0.2,
        "tokens_per_second": 40.0,
        "reply_tokens": 12,
        "timeout": 30.0,
    },
}


def _prepare(procs: list[Any]) -> None:
    for proc, model in zip(procs, MODELS, strict=True):
        proc.reset(unload=True)
        proc.load(model, keep_alive=-1)


def _avoidable(
    logs: dict[str, list[dict[str, Any]]], start_model: dict[str, str], slots: int
) -> dict[str, int]:
    """Cold loads, and those that started while another instance had the model and a free slot."""
    chats = {
        inst: sorted(
            (r for r in records if r["path"] == "/api/chat" and r.get("model_name")),
            key=lambda r: r["started_at"],
        )
        for inst, records in logs.items()
    }

    def resident(inst: str, t: float) -> str:
        model = start_model[inst]
        for r in chats[inst]:
            if r["started_at"] >= t:
                break
            if r.get("cold_load"):
                model = r["model_name"]
        return model

    def busy(inst: str, t: float) -> int:
        return sum(
            1
            for r in chats[inst]
            if r["started_at"] < t and (r.get("wall_time") is None or r["started_at"] + r["wall_time"] > t)
        )

    cold = avoidable = 0
    for inst, records in chats.items():
        for r in records:
            if not r.get("cold_load"):
                continue
            cold += 1
            t = r["started_at"]
            for other in chats:
                if other != inst and resident(other, t) == r["model_name"] and busy(other, t) < slots:
                    avoidable += 1
                    break
    return {"cold_loads": cold, "avoidable_cold_loads": avoidable}


async def _one(params: dict[str, Any], procs: list[Any], strategy: str, seed: int) -> dict[str, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    await asyncio.to_thread(_prepare, procs)
    provider = OllamaPoolProvider(
        instances=instance_list(procs, params["max_concurrent"]),
        load_balancing={"strategy": strategy},
    )
    await provider.initialize()
    models = random.Random(seed).choices(MODELS, k=params["requests"])

    async def call(index: int) -> Sample:
        start = time.perf_counter()
        return pool_sample(start, await provider.chat(models[index], MESSAGES))

    try:
        samples = await open_loop(call, params["rate"], params["requests"], seed, timeout=params["timeout"])
    finally:
        await provider.close()
    logs = {f"i{n}": await asyncio.to_thread(p.requests) for n, p in enumerate(procs)}
    starts = {f"i{n}": m for n, m in enumerate(MODELS)}
    ok = [s for s in samples if s.ok]
    return {
        "latency": latency_summary([s.latency for s in ok]) if ok else None,
        "failed": len(samples) - len(ok),
        "errors": sorted({s.error for s in samples if s.error})[:5],
        "client_cold_loads": sum(1 for s in ok if s.cold_load),
        **_avoidable(logs, starts, params["max_concurrent"]),
    }


async def _measure(params: dict[str, Any], procs: list[Any]) -> dict[str, Any]:
    strategies = params["strategies"]
    per: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    for run in range(params["runs"]):
        shift = run % len(strategies)
        for strategy in strategies[shift:] + strategies[:shift]:
            got = await _one(params, procs, strategy, seed=2000 + run)
            per[strategy].append(got)
            p99 = got["latency"]["p99_ms"] if got["latency"] else float("nan")
            log(
                f"residency run {run + 1}/{params['runs']} {strategy}: cold loads {got['cold_loads']} "
                f"(avoidable {got['avoidable_cold_loads']}), p99 {p99:.0f} ms, failed {got['failed']}"
            )
    out = {}
    for strategy, runs in per.items():
        out[strategy] = {
            "cold_loads": spread([r["cold_loads"] for r in runs]),
            "avoidable_cold_loads": spread([r["avoidable_cold_loads"] for r in runs]),
            "p50_ms": spread([r["latency"]["p50_ms"] for r in runs if r["latency"]]),
            "p99_ms": spread([r["latency"]["p99_ms"] for r in runs if r["latency"]]),
            "failed": sum(r["failed"] for r in runs),
            "errors": sorted({e for r in runs for e in r["errors"]})[:5],
        }
    return {"params": params, "by_strategy": out}


def run(params: dict[str, Any]) -> dict[str, Any]:
    settings = {
        "models": MODELS,
        "time_scale": params["time_scale"],
        "max_loaded_models": 1,
        "num_parallel": params["max_concurrent"],
        "load_time": params["load_time"],
        "ttft": params["ttft"],
        "prompt_tokens_per_second": 0,
        "tokens_per_second": params["tokens_per_second"],
        "reply_tokens": params["reply_tokens"],
        "keep_alive": -1,
    }
    with emulators(3, **settings) as procs:
        result = asyncio.run(_measure(params, procs))
    result["emulator"] = settings
    return result
