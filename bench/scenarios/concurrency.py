"""Scenario 3c, learned concurrency: servers with 1, 2 and 4 slots, ``max_concurrent`` 8 on each.

Three emulator processes run ``num_parallel`` 1, 2 and 4 (Ollama's ``OLLAMA_NUM_PARALLEL``; the
emulator queues requests beyond it inside the server, without bound, as Ollama does), and the
pool is told ``max_concurrent: 8`` for every one: what a user who guessed does. Requests arrive
open-loop (Poisson, the same seeded arrival times for every arm) at ``load`` times what the seven
slots can serve. Each arm is a fresh pool: a strategy without and with
``load_balancing.adaptive_concurrency``, in a rotated order in each run; arrivals in the first
``warmup`` seconds are served but not counted (when the limits are being learned).

Reported per arm: p50 and p99 latency, the share of requests each instance served, the share of
requests that waited for a slot inside a server (the emulators' own request logs: waited longer
than a tenth of a service time), and, with adaptive concurrency, the limits the pool had learned
per instance at the end of the run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench._util import (
    MESSAGES,
    MODEL,
    Sample,
    latency_summary,
    log,
    open_loop,
    pool_sample,
    spread,
    start_emulators,
    stop_emulators,
)

PARAMS = {
    "full": {
        "runs": 3,
        "strategies": ["least_loaded", "latency_based"],
        "num_parallel": [1, 2, 4],
        "max_concurrent": 8,
        "load": 0.7,
        "requests": 400,
        "warmup": 3.0,
        # half a second a call: long enough that the servers' slots, not this machine's CPU, are
        # what calls wait for (at 0.11 s a call a loaded 2-core machine became the bottleneck)
        "ttft": 0.2,
        "tokens_per_second": 40.0,
        "reply_tokens": 12,
    },
}
# The smoke run: one strategy, fewer calls, one run.
PARAMS["quick"] = {
    **PARAMS["full"],
    "runs": 1,
    "strategies": ["least_loaded"],
    "requests": 120,
    "warmup": 2.0,
}
# A request "waited in the server" when it waited longer than this share of its service time
# (shorter waits are the moment between a reply and the release of its slot).
WAITED_SHARE = 0.1


def _service(params: dict[str, Any]) -> float:
    """Modelled (and, at time_scale 1, real) seconds one request takes on a free slot."""
    return params["ttft"] + params["reply_tokens"] / params["tokens_per_second"]


async def _one(
    params: dict[str, Any], procs: list[Any], strategy: str, adaptive: bool, seed: int
) -> dict[str, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    ids = [f"np{n}" for n in params["num_parallel"]]
    instances = [
        {"id": ident, "url": proc.url, "max_concurrent": params["max_concurrent"]}
        for ident, proc in zip(ids, procs, strict=True)
    ]
    lb = {"strategy": strategy, "adaptive_concurrency": adaptive}
    provider = OllamaPoolProvider(instances=instances, load_balancing=lb)
    await provider.initialize()
    for proc in procs:
        await asyncio.to_thread(proc.clear_log)
    arrivals: dict[int, float] = {}
    rate = params["load"] * sum(params["num_parallel"]) / _service(params)

    async def call(index: int) -> Sample:
        start = time.perf_counter()
        return pool_sample(start, await provider.chat(MODEL, MESSAGES))

    try:
        samples = await open_loop(
            call, rate, params["requests"], seed, on_arrival=lambda i, t: arrivals.__setitem__(i, t)
        )
        status = provider.manager.status()
    finally:
        await provider.close()
    counted = [s for i, s in enumerate(samples) if arrivals.get(i, 0.0) >= params["warmup"]]
    ok = [s for s in counted if s.ok]
    share = {ident: 0 for ident in ids}
    for s in ok:
        if s.instance in share:
            share[s.instance] += 1
    # The server side, from the emulators' logs: every chat request of this arm (warm-up included).
    waited, served = 0, 0
    for proc in procs:
        for record in await asyncio.to_thread(proc.requests):
            if record.get("path") != "/api/chat" or not record.get("finished"):
                continue
            served += 1
            work = (record.get("prompt_eval_duration") or 0) + (record.get("eval_duration") or 0)
            if (record.get("queue_duration") or 0) > WAITED_SHARE * work:
                waited += 1
    limits = {
        ident: (info.get("concurrency_limits") or {}).get(f"{MODEL}:latest")
        for ident, info in status["instances"].items()
    }
    return {
        "latency": latency_summary([s.latency for s in ok]),
        "share": {k: v / max(1, len(ok)) for k, v in share.items()},
        "server_waited": waited / max(1, served),
        "limits": limits if adaptive else None,
        "failed": len(counted) - len(ok),
        "errors": sorted({s.error for s in counted if s.error})[:5],
    }


async def _measure(params: dict[str, Any], procs: list[Any]) -> dict[str, Any]:
    arms = [(s, a) for s in params["strategies"] for a in (False, True)]
    per: dict[tuple[str, bool], list[dict[str, Any]]] = {arm: [] for arm in arms}
    for run in range(params["runs"]):
        shift = run % len(arms)
        for strategy, adaptive in arms[shift:] + arms[:shift]:
            got = await _one(params, procs, strategy, adaptive, seed=3000 + run)
            per[(strategy, adaptive)].append(got)
            log(
                f"concurrency run {run + 1}/{params['runs']} {strategy} adaptive={adaptive}: "
                f"p50 {got['latency']['p50_ms']:.0f} ms, p99 {got['latency']['p99_ms']:.0f} ms, "
                f"waited in a server {got['server_waited']:.1%}, limits {got['limits']}"
            )
    out: dict[str, Any] = {}
    for strategy in params["strategies"]:
        row: dict[str, Any] = {}
        for adaptive in (False, True):
            runs = per[(strategy, adaptive)]
            row["adaptive" if adaptive else "fixed"] = {
                "p50_ms": spread([r["latency"]["p50_ms"] for r in runs]),
                "p99_ms": spread([r["latency"]["p99_ms"] for r in runs]),
                "share": {inst: spread([r["share"][inst] for r in runs]) for inst in runs[0]["share"]},
                "server_waited": spread([r["server_waited"] for r in runs]),
                "failed": sum(r["failed"] for r in runs),
                "errors": sorted({e for r in runs for e in r["errors"]})[:5],
            }
        adaptive_runs, fixed_runs = per[(strategy, True)], per[(strategy, False)]
        row["adaptive"]["limits"] = {
            inst: spread([r["limits"][inst] for r in adaptive_runs if r["limits"][inst] is not None])
            for inst in adaptive_runs[0]["limits"]
        }
        # adaptive / fixed, run by run (each pair measured on the same arrivals)
        row["p99_ratio"] = spread(
            [
                a["latency"]["p99_ms"] / f["latency"]["p99_ms"]
                for a, f in zip(adaptive_runs, fixed_runs, strict=True)
            ]
        )
        row["p50_ratio"] = spread(
            [
                a["latency"]["p50_ms"] / f["latency"]["p50_ms"]
                for a, f in zip(adaptive_runs, fixed_runs, strict=True)
            ]
        )
        out[strategy] = row
    return {"params": params, "service_s": _service(params), "by_strategy": out}


def run(params: dict[str, Any]) -> dict[str, Any]:
    settings = {
        "models": [MODEL],
        "loaded": [MODEL],
        "time_scale": 1.0,
        "ttft": params["ttft"],
        "prompt_tokens_per_second": 0,
        "tokens_per_second": params["tokens_per_second"],
        "reply_tokens": params["reply_tokens"],
    }
    procs: list[Any] = []
    try:
        for n in params["num_parallel"]:
            procs += start_emulators(1, num_parallel=n, **settings)
        result = asyncio.run(_measure(params, procs))
    finally:
        stop_emulators(procs)
    result["emulator"] = settings
    return result
