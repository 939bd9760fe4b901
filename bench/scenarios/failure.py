"""Scenario 5, failure: stop one of three instances under load, then restart it.

Three emulator processes, open-loop Poisson load well inside two instances' capacity. After
``before`` seconds one instance is killed with SIGKILL (its connections are reset, then refused,
as when a server process dies), ``down`` seconds later it is restarted on the same port, and the
load goes on for ``after`` more seconds. The pool runs with fast-reacting but otherwise default
settings: health checks every second and a 5 s breaker recovery timeout (the defaults, 30 s and
60 s, only stretch the "back" time by the same amounts).

Reported: failed requests (what a caller saw raise), p99 before / while down / after the restart
(by arrival time), retried requests, and from the pool's own events: when the instance was marked
down (health unhealthy or breaker open), the last attempt routed to it before that, attempts that
still went to it while down (half-open probes), and when it served successfully again after the
restart.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from bench._util import (
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

PARAMS = {
    "full": {
        "runs": 3,
        "rate": 40.0,
        "before": 2.0,
        "down": 6.0,
        "after": 7.0,
        "max_concurrent": 4,
        "ttft": 0.03,
        "tokens_per_second": 200.0,
        "reply_tokens": 12,
        "health_check_interval": 1.0,
        "recovery_timeout": 5.0,
    },
    "quick": {
        "runs": 1,
        "rate": 40.0,
        "before": 1.0,
        "down": 3.0,
        "after": 4.0,
        "max_concurrent": 4,
        "ttft": 0.03,
        "tokens_per_second": 200.0,
        "reply_tokens": 12,
        "health_check_interval": 0.5,
        "recovery_timeout": 2.0,
    },
}
VICTIM = "i1"


def _p99(samples: list[Sample]) -> float | None:
    ok = [s.latency for s in samples if s.ok]
    return latency_summary(ok)["p99_ms"] if ok else None


async def _one(params: dict[str, Any], procs: list[Any], seed: int) -> dict[str, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    provider = OllamaPoolProvider(
        instances=instance_list(procs, params["max_concurrent"]),
        load_balancing={
            "health_check_interval": params["health_check_interval"],
            "circuit_breaker": {"recovery_timeout": params["recovery_timeout"]},
        },
    )
    await provider.initialize()
    clock = time.perf_counter
    events: list[tuple[float, Any]] = []
    lock = threading.Lock()

    def observe(event: Any) -> None:  # runs in whichever thread emits (callers, health monitor)
        if getattr(event, "instance", None) == VICTIM or getattr(event, "from_instance", None) == VICTIM:
            with lock:
                events.append((clock(), event))

    # Warm every instance (connections, first latency samples) before the clock starts.
    await asyncio.gather(*(provider.chat(MODEL, MESSAGES) for _ in range(3 * params["max_concurrent"])))
    provider.events.subscribe(observe)
    victim = procs[1]
    marks: dict[str, float] = {}
    rate = params["rate"]
    count = int(rate * (params["before"] + params["down"] + params["after"]))
    arrival: dict[int, float] = {}
    t0 = clock()

    async def call(index: int) -> Sample:
        start = clock()
        arrival[index] = start
        return pool_sample(start, await provider.chat(MODEL, MESSAGES))

    async def chaos() -> None:
        await asyncio.sleep(params["before"])
        marks["kill"] = clock()
        await asyncio.to_thread(victim.kill)
        await asyncio.sleep(params["down"])
        marks["restart_begin"] = clock()
        await asyncio.to_thread(victim.start)
        marks["restart"] = clock()  # listening again

    try:
        chaos_task = asyncio.create_task(chaos())
        samples = await open_loop(call, rate, count, seed, timeout=120.0)
        await chaos_task
    finally:
        await provider.close()

    kill, restart = marks["kill"], marks["restart"]
    before = [s for i, s in enumerate(samples) if arrival.get(i, t0) < kill]
    during = [s for i, s in enumerate(samples) if kill <= arrival.get(i, t0) < restart]
    after = [s for i, s in enumerate(samples) if arrival.get(i, t0) >= restart]
    down_at = next(
        (
            t
            for t, e in events
            if t >= kill
            and (
                (e.kind == "health_state_changed" and e.new == "unhealthy")
                or (e.kind == "breaker_state_changed" and e.new == "open")
            )
        ),
        None,
    )
    routed = [t for t, e in events if e.kind == "routing_decision"]
    last_before_down = max((t for t in routed if kill <= t <= (down_at or restart)), default=None)
    probes_while_down = sum(1 for t in routed if (down_at or restart) < t < restart)
    back = next(
        (t for t, e in events if t >= restart and e.kind == "request_finished" and e.outcome == "success"),
        None,
    )
    served_after = sum(1 for s in after if s.ok and s.instance == VICTIM)
    return {
        "requests": len(samples),
        "failed": sum(1 for s in samples if not s.ok),
        "failed_by_phase": {
            "before": sum(1 for s in before if not s.ok),
            "during": sum(1 for s in during if not s.ok),
            "after": sum(1 for s in after if not s.ok),
        },
        "errors": sorted({s.error for s in samples if s.error})[:5],
        "retried": sum(1 for s in samples if s.ok and s.attempts > 1),
        "p99_before_ms": _p99(before),
        "p99_during_ms": _p99(during),
        "p99_after_ms": _p99(after),
        "marked_down_after_s": None if down_at is None else down_at - kill,
        "last_attempt_after_s": None if last_before_down is None else last_before_down - kill,
        "probe_attempts_while_down": probes_while_down,
        "back_after_s": None if back is None else back - restart,
        "restart_took_s": restart - marks["restart_begin"],
        "victim_share_after": served_after / max(1, sum(1 for s in after if s.ok)),
        # for the plot: [arrival s, latency ms, ok, served by the victim] per request
        "timeline": [
            [round(arrival.get(i, t0) - t0, 4), round(s.latency * 1e3, 2), s.ok, s.instance == VICTIM]
            for i, s in enumerate(samples)
        ],
        "marks": {"kill": kill - t0, "restart": restart - t0},
    }


async def _measure(params: dict[str, Any], procs: list[Any]) -> dict[str, Any]:
    runs = []
    for run in range(params["runs"]):
        got = await _one(params, procs, seed=3000 + run)
        runs.append(got)
        log(
            f"failure run {run + 1}/{params['runs']}: failed {got['failed']}, retried {got['retried']}, "
            f"p99 {got['p99_before_ms']:.0f}/{got['p99_during_ms']:.0f}/{got['p99_after_ms']:.0f} ms, "
            f"down after {got['marked_down_after_s']}, back after {got['back_after_s']}"
        )
        for proc in procs:
            await asyncio.to_thread(proc.clear_log)
    keys = (
        "failed",
        "retried",
        "p99_before_ms",
        "p99_during_ms",
        "p99_after_ms",
        "marked_down_after_s",
        "last_attempt_after_s",
        "probe_attempts_while_down",
        "back_after_s",
        "victim_share_after",
    )
    return {
        "params": params,
        "victim": VICTIM,
        "summary": {k: spread([r[k] for r in runs if r[k] is not None]) for k in keys},
        "failed_total": sum(r["failed"] for r in runs),
        "requests_total": sum(r["requests"] for r in runs),
        "errors": sorted({e for r in runs for e in r["errors"]})[:5],
        "runs": [{k: v for k, v in r.items() if k != "timeline"} for r in runs],
        "timeline": runs[0]["timeline"],
        "marks": runs[0]["marks"],
    }


def run(params: dict[str, Any]) -> dict[str, Any]:
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
    with emulators(3, **settings) as procs:
        result = asyncio.run(_measure(params, procs))
    result["emulator"] = settings
    return result
