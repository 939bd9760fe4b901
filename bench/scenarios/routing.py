"""Scenario 6, routing cost: microseconds per routing decision with 1, 10, 100 and 1,000 instances.

No network: instances are built in memory as in tests/unit/test_strategies.py, every one healthy,
with the model installed, a latency estimate, and a quarter of them partly busy, so no strategy
takes a short cut that a real pool would not. Two levels are timed:

* ``select``: ``Router.select`` alone, the pure decision (filter, score, pick).
* ``acquire``: ``OllamaPoolManager.try_acquire`` followed by ``finish`` on a manager without
  health checks: the decision plus the lock, the lease, the in-flight bookkeeping, what the pool
  learns from a finished request and the events (what one call through the pool pays).

Timing is the thread's CPU time (``time.thread_time``: time when another process has the core is
not counted), best-of-N and median-of-N over batches of decisions with garbage collection off
inside a batch; wall-clock best and median are recorded too. On a machine others use as well,
best-of-N CPU time is the least noisy estimate of the cost.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from typing import Any

from bench._util import EVERY_STRATEGY, log

PARAMS = {
    "full": {
        "sizes": [1, 10, 100, 1000],
        "strategies": list(EVERY_STRATEGY),
        "repeats": 9,
        "budget": 0.05,  # seconds per batch
    },
    "quick": {
        "sizes": [1, 100],
        "strategies": ["least_loaded", "latency_based"],
        "repeats": 3,
        "budget": 0.02,
    },
}
MODEL = "llama3.2:latest"


def _instances(n: int, now: float) -> list[Any]:
    from gleitzeit_llm.config import InstanceConfig
    from gleitzeit_llm.routing.breaker import CircuitBreaker
    from gleitzeit_llm.routing.instance import InstanceState, OllamaInstance

    rng = random.Random(n)
    out = []
    for i in range(n):
        config = InstanceConfig(id=f"i{i}", url=f"http://127.0.0.1:{20000 + i}", max_concurrent=8)
        inst = OllamaInstance(config, CircuitBreaker(clock=lambda: now))
        inst.state = InstanceState.HEALTHY
        inst.installed_models = frozenset({MODEL, "qwen3:latest"})
        if i % 3 == 0:
            inst.loaded_models[MODEL] = now + 300
        inst.metrics.ttft.observe(0.05 + rng.random() * 0.05, now)
        inst.metrics.tpot.observe(0.02, now)
        if i % 4 == 0:
            for _ in range(rng.randrange(1, 4)):
                inst.acquire(MODEL)
        out.append(inst)
    return out


def _time(fn: Any, budget: float, repeats: int) -> dict[str, float]:
    """Per-call microseconds: best and median over ``repeats`` batches sized to ``budget`` seconds."""
    number = 1
    while True:  # calibrate like timeit: the smallest power of ten that fills the budget
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - t0 >= budget / 5 or number >= 10**6:
            break
        number *= 10
    cpu, wall = [], []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            c0, t0 = time.thread_time(), time.perf_counter()
            for _ in range(number):
                fn()
            wall.append((time.perf_counter() - t0) / number * 1e6)
            cpu.append((time.thread_time() - c0) / number * 1e6)
    finally:
        if enabled:
            gc.enable()
    return {
        "best_us": min(cpu),
        "median_us": statistics.median(cpu),
        "wall_best_us": min(wall),
        "wall_median_us": statistics.median(wall),
        "calls_per_batch": number,
    }


def _select_cost(n: int, strategy: str, params: dict[str, Any]) -> dict[str, float]:
    from gleitzeit_llm.routing.strategies import Router, RouteRequest

    now = 1000.0
    pool = _instances(n, now)
    router = Router(random.Random(1))
    request = RouteRequest(model=MODEL, strategy=strategy)
    assert router.select(pool, request, now).instance is not None

    def decide() -> None:
        router.select(pool, request, now)

    return _time(decide, params["budget"], params["repeats"])


def _acquire_cost(n: int, strategy: str, params: dict[str, Any]) -> dict[str, float]:
    from gleitzeit_llm import OllamaPoolManager

    instances = [
        {"id": f"i{i}", "url": f"http://127.0.0.1:{20000 + i}", "max_concurrent": 8} for i in range(n)
    ]
    manager = OllamaPoolManager(instances, strategy=strategy, health_checks=False)
    now = time.monotonic()
    for inst in manager.instances:
        inst.installed_models = frozenset({MODEL})
        inst.metrics.ttft.observe(0.05, now)
    manager._router.invalidate()
    request = manager.route_request(MODEL)

    def decide() -> None:
        lease = manager.try_acquire(request)
        manager.finish(lease, None, output_tokens=12)

    try:
        return _time(decide, params["budget"], params["repeats"])
    finally:
        manager.close_sync()


def run(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in params["sizes"]:
        row: dict[str, Any] = {}
        for strategy in params["strategies"]:
            row[strategy] = {
                "select": _select_cost(n, strategy, params),
                "acquire": _acquire_cost(n, strategy, params),
            }
        out[str(n)] = row
        log(
            f"routing n={n}: "
            + ", ".join(
                f"{s} {v['select']['best_us']:.1f}/{v['acquire']['best_us']:.1f} us" for s, v in row.items()
            )
        )
    return {"params": params, "by_instances": out}
