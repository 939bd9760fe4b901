"""Scenario 2, scaling: achieved throughput of N instances against the limit N*c/service_time.

Each instance is its own emulator process serving ``c`` requests at a time (``num_parallel=c``)
with a fixed modelled service time (all of it time to first token, output instant), in real time
(``time_scale=1``). The service time is large against the emulator's own per-request cost, so the
limit is what an ideal client could reach.

In each run and for each N, two closed loops are measured back to back for the same window:

* ``direct``, the baseline: plain httpx workers, exactly ``c`` pinned to each instance (a perfect
  static assignment that needs no balancer at all); it shows what the setup itself achieves.
* ``pool``: ``2*N*c`` workers through one ``OllamaPoolProvider`` (``max_concurrent=c`` per
  instance, default ``least_loaded``), so the pool is saturated and its queue hands each freed
  slot to a waiter.

Throughput over the window after the warm-up counts every request with the share of its duration
inside the window. The service time (200 ms) is chosen so that the whole set-up (client, up to
eight emulator processes) stays well inside the machine's two cores at the limit (160 requests/s
at N=8): this scenario measures whether the pool keeps every slot busy, not CPU throughput (that
is the overhead scenario's job).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench._util import MESSAGES, MODEL, emulators, instance_list, log, spread, timed_window

PARAMS = {
    "full": {
        "runs": 3,
        "instances": [1, 2, 4, 8],
        "service_time": 0.2,
        "max_concurrent": 4,
        "warmup": 0.6,
        "window": 3.0,
    },
    "quick": {
        "runs": 2,
        "instances": [1, 2],
        "service_time": 0.2,
        "max_concurrent": 4,
        "warmup": 0.4,
        "window": 1.2,
    },
}


async def _direct(procs: list[Any], c: int, warmup: float, window: float) -> dict[str, Any]:
    import httpx

    body = {"model": MODEL, "messages": MESSAGES, "stream": False}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        urls = [f"{p.url}/api/chat" for p in procs]

        async def call(worker: int) -> None:
            response = await client.post(urls[worker % len(urls)], json=body)
            response.raise_for_status()
            response.json()

        return await timed_window(call, len(procs) * c, warmup, window)


async def _pool(procs: list[Any], c: int, warmup: float, window: float) -> dict[str, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    provider = OllamaPoolProvider(instances=instance_list(procs, c))
    await provider.initialize()
    try:

        async def call(worker: int) -> None:
            await provider.chat(MODEL, MESSAGES)

        return await timed_window(call, 2 * len(procs) * c, warmup, window)
    finally:
        await provider.close()


async def _measure(params: dict[str, Any], procs: list[Any]) -> dict[str, Any]:
    c, service = params["max_concurrent"], params["service_time"]
    per_n: dict[str, dict[str, list[Any]]] = {}
    for run in range(params["runs"]):
        for n in params["instances"]:
            subset = procs[:n]
            limit = n * c / service
            order = ("direct", "pool") if run % 2 == 0 else ("pool", "direct")
            got: dict[str, Any] = {}
            for which in order:
                fn = _direct if which == "direct" else _pool
                got[which] = await fn(subset, c, params["warmup"], params["window"])
            slot = per_n.setdefault(str(n), {"pool": [], "direct": []})
            slot["pool"].append(got["pool"])
            slot["direct"].append(got["direct"])
            log(
                f"scaling run {run + 1}/{params['runs']} N={n}: limit {limit:.0f}/s, "
                f"direct {got['direct']['throughput_rps']:.1f}/s, pool {got['pool']['throughput_rps']:.1f}/s"
            )
        for proc in procs:
            await asyncio.to_thread(proc.clear_log)
    out: dict[str, Any] = {}
    for n in params["instances"]:
        limit = n * c / service
        pool, direct = per_n[str(n)]["pool"], per_n[str(n)]["direct"]
        out[str(n)] = {
            "limit_rps": limit,
            "pool_rps": spread([r["throughput_rps"] for r in pool]),
            "direct_rps": spread([r["throughput_rps"] for r in direct]),
            "pool_vs_limit": spread([r["throughput_rps"] / limit for r in pool]),
            "direct_vs_limit": spread([r["throughput_rps"] / limit for r in direct]),
            "pool_vs_direct": spread(
                [p["throughput_rps"] / d["throughput_rps"] for p, d in zip(pool, direct, strict=True)]
            ),
            "pool_p50_ms": spread([r["latency"]["p50_ms"] for r in pool if r["latency"]]),
            "direct_p50_ms": spread([r["latency"]["p50_ms"] for r in direct if r["latency"]]),
            "pool_client_cpu_share": spread([r["client_cpu_share"] for r in pool]),
            "direct_client_cpu_share": spread([r["client_cpu_share"] for r in direct]),
            "pool_errors": sum(r["errors"] for r in pool),
            "direct_errors": sum(r["errors"] for r in direct),
        }
    return {"params": params, "by_instances": out}


def run(params: dict[str, Any]) -> dict[str, Any]:
    c = params["max_concurrent"]
    settings = {
        "models": [MODEL],
        "loaded": [MODEL],
        "time_scale": 1.0,
        "num_parallel": c,
        "ttft": params["service_time"],
        "prompt_tokens_per_second": 0,  # TTFT independent of the prompt
        "tokens_per_second": 0,  # output instant: the service time is exactly the TTFT
    }
    with emulators(max(params["instances"]), **settings) as procs:
        result = asyncio.run(_measure(params, procs))
    result["emulator"] = settings
    return result
