"""Scenario 3, unequal instances: four instances, one ten times slower, every strategy.

Four emulator processes with the same model resident; one of them runs with the emulator's
``slow_factor=10`` fault (time to first token and time per token both ten times longer). Requests
arrive open-loop (Poisson, the same seeded arrival times for every strategy) at a rate well
inside the three fast instances' capacity, each strategy on a fresh pool (nothing learned carries
over). Arrivals in the first ``warmup`` seconds are served but not counted: they are when
``latency_based`` measures the instances. Strategies run in a rotated order in each run.

Reported per strategy: p50 and p99 latency, and the share of requests each instance served.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench._util import (
    EVERY_STRATEGY,
    MESSAGES,
    MODEL,
    Sample,
    emulators,
    instance_list,
    latency_summary,
    log,
    open_loop,
    pool_sample,
    spread,
)

STRATEGIES = list(EVERY_STRATEGY)

PARAMS = {
    "full": {
        "runs": 3,
        "strategies": STRATEGIES,
        "rate": 50.0,
        "requests": 160,
        "warmup": 1.0,
        "max_concurrent": 4,
        "ttft": 0.03,
        "tokens_per_second": 200.0,
        "reply_tokens": 12,
        "slow_factor": 10.0,
    },
    "quick": {
        "runs": 1,
        "strategies": ["round_robin", "latency_based"],
        "rate": 40.0,
        "requests": 80,
        "warmup": 0.5,
        "max_concurrent": 4,
        "ttft": 0.03,
        "tokens_per_second": 200.0,
        "reply_tokens": 12,
        "slow_factor": 10.0,
    },
}
SLOW = "i3"


async def _one(params: dict[str, Any], procs: list[Any], strategy: str, seed: int) -> dict[str, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    provider = OllamaPoolProvider(
        instances=instance_list(procs, params["max_concurrent"]),
        load_balancing={"strategy": strategy},
    )
    await provider.initialize()
    arrivals: dict[int, float] = {}

    async def call(index: int) -> Sample:
        start = time.perf_counter()
        return pool_sample(start, await provider.chat(MODEL, MESSAGES))

    try:
        samples = await open_loop(
            call,
            params["rate"],
            params["requests"],
            seed,
            on_arrival=lambda i, t: arrivals.__setitem__(i, t),
        )
    finally:
        await provider.close()
    counted = [s for i, s in enumerate(samples) if arrivals.get(i, 0.0) >= params["warmup"]]
    ok = [s for s in counted if s.ok]
    share = {f"i{n}": 0 for n in range(len(procs))}
    for s in ok:
        if s.instance in share:
            share[s.instance] += 1
    return {
        "latency": latency_summary([s.latency for s in ok]),
        "share": {k: v / max(1, len(ok)) for k, v in share.items()},
        "failed": len(counted) - len(ok),
        "errors": sorted({s.error for s in counted if s.error})[:5],
    }


async def _measure(params: dict[str, Any], procs: list[Any]) -> dict[str, Any]:
    per: dict[str, list[dict[str, Any]]] = {s: [] for s in params["strategies"]}
    strategies = params["strategies"]
    for run in range(params["runs"]):
        shift = run % len(strategies)
        for strategy in strategies[shift:] + strategies[:shift]:
            got = await _one(params, procs, strategy, seed=1000 + run)
            per[strategy].append(got)
            log(
                f"unequal run {run + 1}/{params['runs']} {strategy}: p50 {got['latency']['p50_ms']:.0f} ms, "
                f"p99 {got['latency']['p99_ms']:.0f} ms, slow share {got['share'][SLOW]:.1%}"
            )
        for proc in procs:
            await asyncio.to_thread(proc.clear_log)
    out: dict[str, Any] = {}
    for strategy, runs in per.items():
        out[strategy] = {
            "p50_ms": spread([r["latency"]["p50_ms"] for r in runs]),
            "p99_ms": spread([r["latency"]["p99_ms"] for r in runs]),
            "share": {inst: spread([r["share"][inst] for r in runs]) for inst in runs[0]["share"]},
            "failed": sum(r["failed"] for r in runs),
            "errors": sorted({e for r in runs for e in r["errors"]})[:5],
        }
    return {
        "params": params,
        "slow_instance": SLOW,
        "by_strategy": out,
        "latency_vs_round_robin_p99": p99_ratio(per),
    }


def p99_ratio(per: dict[str, list[dict[str, Any]]]) -> Any:
    """latency_based p99 / round_robin p99, run by run (None unless both ran)."""
    if "latency_based" not in per or "round_robin" not in per:
        return None
    return spread(
        [
            lb["latency"]["p99_ms"] / rr["latency"]["p99_ms"]
            for lb, rr in zip(per["latency_based"], per["round_robin"], strict=True)
        ]
    )


def run(params: dict[str, Any]) -> dict[str, Any]:
    return run_on_unequal_instances(params, _measure)


def run_on_unequal_instances(
    params: dict[str, Any], measure: Callable[[dict[str, Any], list[Any]], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """``measure(params, procs)`` on four emulator processes, the last ``slow_factor`` times slower."""
    settings = {
        "models": [MODEL],
        "loaded": [MODEL],
        "time_scale": 1.0,
        "num_parallel": params["max_concurrent"],
        "ttft": params["ttft"],
        "prompt_tokens_per_second": 0,
        "tokens_per_second": params["tokens_per_second"],
        "reply_tokens": params["reply_tokens"],
    }
    with emulators(4, **settings) as procs:
        procs[3].set_faults(slow_factor=params["slow_factor"])
        result = asyncio.run(measure(params, procs))
    result["emulator"] = {**settings, "slow_factor": params["slow_factor"]}
    return result
