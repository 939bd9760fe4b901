"""Scenario 3b, cold start: the unequal instances again, from a fresh pool, every call counted.

Four emulator processes with the same model resident, one of them ten times slower (about 20,
20, 20 and 200 ms a call). Each strategy gets a new ``OllamaPoolProvider``: ``await
initialize()`` and then, at once, a closed loop of ``requests`` calls at ``concurrency`` 8.
Nothing is warmed up and nothing is left out: the first calls are where ``latency_based`` has
no latency sample of any instance yet, and where transports and connections are still being
built, so this measures what the warm scenario (``unequal``) deliberately skips. There is no
queueing (``max_concurrent`` and the emulator's ``num_parallel`` exceed what a strategy sends).

Reported per strategy: p50, p99 and max latency, how many calls the slow instance served (and
when: the call's start, ms after the first call), and each instance's first latency samples
against its steady state (its median over the second half), which is what a fresh
``latency_based`` learns from. ``prewarm`` (off by default) opens each instance's transport
and one connection after ``initialize()``, to tell the cost of lazy transports from the cost of
routing with no samples.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench._util import MESSAGES, MODEL, instance_list, latency_summary, log, spread
from bench.scenarios.unequal import p99_ratio, run_on_unequal_instances

PARAMS = {
    "full": {
        "runs": 3,
        "strategies": ["round_robin", "latency_based"],
        "requests": 400,
        "concurrency": 8,
        "max_concurrent": 8,
        "ttft": 0.015,
        "tokens_per_second": 1000.0,
        "reply_tokens": 5,
        "slow_factor": 10.0,
        "prewarm": False,
    },
}
# The smoke run: the same pool and load, fewer calls, one run.
PARAMS["quick"] = {**PARAMS["full"], "runs": 1, "requests": 200}
SLOW = "i3"
FIRST = 3  # first latency samples reported per instance


async def _prewarm(provider: Any) -> None:
    """What "transports and one warm connection ready at initialize()" would do (bench only)."""
    from types import SimpleNamespace

    for inst in provider.manager.instances:
        transport = await provider._async_transport(SimpleNamespace(instance=inst))
        await transport.ping()


async def _one(params: dict[str, Any], procs: list[Any], strategy: str) -> dict[str, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    provider = OllamaPoolProvider(
        instances=instance_list(procs, params["max_concurrent"]),
        load_balancing={"strategy": strategy},
    )
    await provider.initialize()
    if params.get("prewarm"):
        await _prewarm(provider)
    calls: list[tuple[float, float, str | None]] = []  # start offset, latency, instance
    errors: list[str] = []
    left = params["requests"]
    clock = time.perf_counter
    t0 = clock()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = clock()
            try:
                reply = await provider.chat(MODEL, MESSAGES)
            except Exception as exc:  # a failed call is a result, not a crash of the benchmark
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            info = reply.pool
            calls.append((start - t0, clock() - start, info.instance_id if info else None))

    try:
        await asyncio.gather(*(worker() for _ in range(params["concurrency"])))
    finally:
        await provider.close()
    served = {f"i{n}": 0 for n in range(len(procs))}
    first: dict[str, list[float]] = {k: [] for k in served}
    steady: dict[str, list[float]] = {k: [] for k in served}
    half = max((c[0] for c in calls), default=0.0) / 2  # "steady": calls started in the second half
    for start, latency, inst in sorted(calls):
        if inst not in served:
            continue
        served[inst] += 1
        if len(first[inst]) < FIRST:
            first[inst].append(round(latency * 1e3, 1))
        if start >= half:
            steady[inst].append(latency)
    return {
        "latency": latency_summary([c[1] for c in calls]),
        "served": served,
        "slow_calls_at_ms": [round(s * 1e3, 1) for s, _, i in sorted(calls) if i == SLOW],
        "first_ms": first,
        "steady_p50_ms": {k: round(statistics.median(v) * 1e3, 1) if v else None for k, v in steady.items()},
        "failed": len(errors),
        "errors": sorted(set(errors))[:5],
    }


async def _measure(params: dict[str, Any], procs: list[Any]) -> dict[str, Any]:
    strategies = params["strategies"]
    per: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    for run in range(params["runs"]):
        shift = run % len(strategies)
        for strategy in strategies[shift:] + strategies[:shift]:
            got = await _one(params, procs, strategy)
            per[strategy].append(got)
            log(
                f"coldstart run {run + 1}/{params['runs']} {strategy}: "
                f"p50 {got['latency']['p50_ms']:.0f} ms, "
                f"p99 {got['latency']['p99_ms']:.0f} ms, slow served {got['served'][SLOW]} "
                f"at {got['slow_calls_at_ms'][:6]} ms; first samples {got['first_ms']}, "
                f"steady p50 {got['steady_p50_ms']}"
            )
        for proc in procs:
            await asyncio.to_thread(proc.clear_log)
    out: dict[str, Any] = {}
    for strategy, runs in per.items():
        out[strategy] = {
            "p50_ms": spread([r["latency"]["p50_ms"] for r in runs]),
            "p99_ms": spread([r["latency"]["p99_ms"] for r in runs]),
            "max_ms": spread([r["latency"]["max_ms"] for r in runs]),
            "slow_served": spread([r["served"][SLOW] for r in runs]),
            "served": {inst: spread([r["served"][inst] for r in runs]) for inst in runs[0]["served"]},
            "failed": sum(r["failed"] for r in runs),
            "errors": sorted({e for r in runs for e in r["errors"]})[:5],
            "runs": [
                {k: r[k] for k in ("slow_calls_at_ms", "first_ms", "steady_p50_ms", "served")} for r in runs
            ],
        }
    return {
        "params": params,
        "slow_instance": SLOW,
        "by_strategy": out,
        "latency_vs_round_robin_p99": p99_ratio(per),
    }


def run(params: dict[str, Any]) -> dict[str, Any]:
    return run_on_unequal_instances(params, _measure)
