"""The embedded demo: three emulated Ollama servers, one pool, a failure, and what the pool did.

``make demo`` / ``gleitzeit-llm demo`` runs it offline on loopback. With
``GLEITZEIT_OLLAMA_INSTANCES`` set, the same workload runs against those real servers instead
(and no instance is stopped).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from typing import Any, TextIO

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.errors import GleitzeitError
from gleitzeit_llm.observability.events import PoolEvent
from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["run_demo"]

QUESTIONS = [
    "Why is the sky blue?",
    "Summarise the plot of Hamlet in one line.",
    "What is a circuit breaker in distributed systems?",
    "Name three uses of a load balancer.",
    "Explain peak-EWMA to a new engineer.",
]


def _emulated_pool() -> tuple[list[Any], PoolConfig]:
    from gleitzeit_llm.testing import OllamaEmulator

    scale = 0.02  # modelled seconds run 50x faster
    gpu = OllamaEmulator(
        models=["llama3.2", "llama3.2:70b"],
        loaded=["llama3.2"],
        num_parallel=4,
        tokens_per_second=120,
        time_scale=scale,
    )
    cpu = OllamaEmulator(
        models=["llama3.2"], loaded=["llama3.2"], num_parallel=2, tokens_per_second=15, time_scale=scale
    )
    flaky = OllamaEmulator(
        models=["llama3.2"], loaded=["llama3.2"], num_parallel=2, tokens_per_second=40, time_scale=scale
    )
    emulators = [gpu.start(), cpu.start(), flaky.start()]
    config = PoolConfig.from_dict(
        {
            "instances": [
                {"id": "gpu-box", "url": gpu.url, "tags": ["gpu"], "max_concurrent": 4},
                {"id": "cpu-box", "url": cpu.url, "tags": ["cpu"], "max_concurrent": 2},
                {"id": "spot-box", "url": flaky.url, "tags": ["cpu", "spot"], "max_concurrent": 2},
            ],
            "load_balancing": {
                "strategy": "least_loaded",
                "health_check_interval": 0.5,
                "health_check_timeout": 1.0,
                "retry_backoff_base": 0.01,
                "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 1.0},
            },
        }
    )
    return emulators, config


def _status_line(status: dict[str, Any]) -> str:
    parts = []
    for instance_id, info in status["instances"].items():
        breaker = "open" if info["circuit_breaker_open"] else info["circuit_state"]
        parts.append(
            f"{instance_id}: {info['state']:<9} in-flight {info['active_requests']} breaker {breaker}"
        )
    return " | ".join(parts)


async def _workload(pool: OllamaPoolProvider, requests: int, on_progress: Any) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(6)
    results: list[dict[str, Any]] = []

    async def one(n: int) -> None:
        async with gate:
            started = time.perf_counter()
            hints: dict[str, Any] = {"require_gpu": True, "model": "llama3.2:70b"} if n % 10 == 0 else {}
            model = hints.pop("model", "llama3.2")
            try:
                reply = await pool.chat(
                    model, [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]}], **hints
                )
            except GleitzeitError as exc:
                results.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            else:
                results.append(
                    {
                        "ok": True,
                        "instance": reply.pool.instance_id if reply.pool else "?",
                        "attempts": reply.pool.attempts if reply.pool else 1,
                        "latency": time.perf_counter() - started,
                    }
                )
            on_progress(len(results))

    await asyncio.gather(*(one(n) for n in range(requests)))
    return results


async def _main(out: TextIO, requests: int) -> int:
    real = bool(os.environ.get("GLEITZEIT_OLLAMA_INSTANCES"))
    emulators: list[Any] = []
    if real:
        config = PoolConfig.from_env()
        out.write(
            f"Using the real servers in GLEITZEIT_OLLAMA_INSTANCES ({len(config.instances)} instances).\n"
        )
    else:
        emulators, config = _emulated_pool()
        out.write("Started three emulated Ollama servers on 127.0.0.1:\n")
        for inst, emu in zip(config.instances, emulators, strict=True):
            out.write(f"  {inst.id:<9} {emu.url}  tags={','.join(inst.tags)}\n")
    events: Counter[str] = Counter()
    notable: list[str] = []

    def observe(event: PoolEvent) -> None:
        events[event.kind] += 1
        if event.kind in ("breaker_state_changed", "health_state_changed"):
            notable.append(f"  {event.kind.replace('_', ' ')}: {event.instance} {event.old} -> {event.new}")  # type: ignore[attr-defined]

    try:
        async with OllamaPoolProvider(config=config) as pool:
            pool.events.subscribe(observe)
            out.write(f"\nSending {requests} chat requests, 6 at a time; every 10th needs the GPU box.\n")
            stopped_at = requests // 3

            def on_progress(done: int) -> None:
                if done == stopped_at and emulators:
                    emulators[2].stop()
                    out.write(
                        f"\n  !! spot-box stopped after {done} requests (like a reclaimed spot machine)\n"
                    )
                if done % max(1, requests // 6) == 0:
                    out.write(f"  [{done:>3}/{requests}] {_status_line(pool.status())}\n")

            started = time.perf_counter()
            results = await _workload(pool, requests, on_progress)
            elapsed = time.perf_counter() - started
            if emulators:
                emulators[2].start()
                out.write("\n  spot-box restarted; waiting for the pool to notice...\n")
                await pool.manager.acheck_health_now()
                await asyncio.sleep(config.load_balancing.circuit_breaker.recovery_timeout)
                extra = await _workload(pool, 12, lambda done: None)
                back = sum(1 for r in extra if r.get("instance") == "spot-box")
                out.write(f"  after recovery spot-box served {back} of 12 new requests\n")
            status = pool.status()
    finally:
        for emu in emulators:
            emu.close()

    ok = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]
    latencies = sorted(r["latency"] for r in ok) or [0.0]
    per_instance = Counter(r["instance"] for r in ok)
    failovers = sum(r["attempts"] - 1 for r in ok)
    out.write("\nState changes the pool saw:\n" + ("\n".join(notable) or "  none") + "\n")
    out.write("\nSummary\n")
    out.write(f"  requests: {len(results)}  succeeded: {len(ok)}  failed: {len(failed)}  in {elapsed:.2f}s\n")
    out.write(
        f"  latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000:.0f} ms\n"
    )
    out.write(f"  failovers: {failovers}  breaker trips: {sum(1 for n in notable if '-> open' in n)}\n")
    out.write("  requests per instance:\n")
    for instance_id, info in status["instances"].items():
        out.write(
            f"    {instance_id:<9} {per_instance.get(instance_id, 0):>4} served   state {info['state']:<9} "
            f"p50 {info['p50_response_time'] * 1000:.0f} ms  errors {info['error_rate']:.0f}%\n"
        )
    for failure in failed[:5]:
        out.write(f"  failed: {failure['error']}\n")
    return 0 if not failed else 1


def run_demo(out: TextIO | None = None, requests: int = 120) -> int:
    """Run the demo and return its exit code (0 when every request succeeded)."""
    return asyncio.run(_main(out or sys.stdout, requests))
