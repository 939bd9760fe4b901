"""Scenario 7, footprint: ``import gleitzeit_llm`` time, and memory growth over 100,000 requests.

Import time: a fresh interpreter per sample (``python -c``), timing the import statement alone
with ``time.perf_counter`` inside the child, so interpreter start-up is excluded; ``import httpx``
(a dependency every variant pays) is timed the same way, in the same run, as a reference. Also
reported: the first use of ``OllamaPoolProvider`` (the lazy import of the heavy modules).

Memory: a fresh child process runs ``requests`` calls through one ``OllamaPoolProvider`` against an
emulator with zero model time, at a fixed concurrency. Resident set size (``VmRSS``, after a full
garbage collection) is sampled after a warm-up and then at regular checkpoints; growth is the last
checkpoint minus the first, and the growth over the second half shows whether it is still rising.
Python's own allocations (``tracemalloc`` is too slow for 100,000 calls) are approximated by
``sys.getallocatedblocks()``, and the pool's per-instance windows are bounded by design (256
latency samples, 100 outcomes).
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from typing import Any

from bench._util import MESSAGES, MODEL, ROOT, emulators, log, rss_bytes, spread

PARAMS = {
    "full": {
        "import_samples": 9,
        "requests": 100_000,
        "warmup": 2_000,
        "checkpoints": 10,
        "concurrency": 8,
    },
    "quick": {
        "import_samples": 3,
        "requests": 3_000,
        "warmup": 500,
        "checkpoints": 3,
        "concurrency": 16,
    },
}

_IMPORT = "import time; t0 = time.perf_counter(); {stmt}; print(time.perf_counter() - t0)"


def _import_time(stmt: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT.format(stmt=stmt)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout.strip().splitlines()[-1])


def import_times(samples: int) -> dict[str, Any]:
    variants = {
        "gleitzeit_llm": "import gleitzeit_llm",
        "httpx": "import httpx",
        "gleitzeit_llm+provider": "import gleitzeit_llm; gleitzeit_llm.OllamaPoolProvider",
    }
    got: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(samples):  # interleaved, so a noisy moment hits every variant
        for name, stmt in variants.items():
            got[name].append(_import_time(stmt) * 1e3)
    out = {name: {**spread(values), "best": min(values)} for name, values in got.items()}
    log(
        "import: "
        + ", ".join(f"{k} median {v['median']:.1f} ms (best {v['best']:.1f})" for k, v in out.items())
    )
    return out


async def _grow(params: dict[str, Any], emu: Any) -> dict[str, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    provider = OllamaPoolProvider(instances=[{"id": "emu", "url": emu.url, "max_concurrent": 64}])
    await provider.initialize()
    total, warmup, conc = params["requests"], params["warmup"], params["concurrency"]
    step = max(1, total // params["checkpoints"])
    done = 0
    failed = 0
    points: list[dict[str, Any]] = []

    async def batch(n: int) -> None:
        nonlocal done, failed
        left = n

        async def worker() -> None:
            nonlocal left, done, failed
            while left > 0:
                left -= 1
                try:
                    await provider.chat(MODEL, MESSAGES)
                except Exception:
                    failed += 1
                done += 1

        await asyncio.gather(*(worker() for _ in range(conc)))

    def checkpoint() -> None:
        gc.collect()
        points.append(
            {"requests": done, "rss_bytes": rss_bytes(), "blocks": sys.getallocatedblocks(), "t": time.time()}
        )

    try:
        await batch(warmup)
        done = 0
        checkpoint()
        t0 = time.perf_counter()
        while done < total:
            await batch(min(step, total - done))
            checkpoint()
            await asyncio.to_thread(emu.clear_log)  # the emulator's log, not ours, would grow
        seconds = time.perf_counter() - t0
    finally:
        await provider.close()
    first, last = points[0], points[-1]
    middle = min(points, key=lambda p: abs(p["requests"] - total / 2))
    return {
        "requests": done,
        "failed": failed,
        "seconds": seconds,
        "throughput_rps": done / seconds,
        "rss_start_bytes": first["rss_bytes"],
        "rss_end_bytes": last["rss_bytes"],
        "growth_bytes": last["rss_bytes"] - first["rss_bytes"],
        "growth_second_half_bytes": last["rss_bytes"] - middle["rss_bytes"],
        "blocks_growth": last["blocks"] - first["blocks"],
        "points": points,
    }


def memory_child(params: dict[str, Any]) -> dict[str, Any]:
    with emulators(1, models=[MODEL], loaded=[MODEL], time_scale=0, num_parallel=64) as (emu,):
        return asyncio.run(_grow(params, emu))


def memory_growth(params: dict[str, Any]) -> dict[str, Any]:
    # A child of its own: only the pool, httpx and the emulator client live in it.
    done = subprocess.run(
        [sys.executable, "-m", "bench.scenarios.footprint", json.dumps(params)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log(
        f"memory: {result['requests']} requests in {result['seconds']:.0f} s, RSS "
        f"{result['rss_start_bytes'] / 2**20:.1f} -> {result['rss_end_bytes'] / 2**20:.1f} MiB "
        f"(second half {result['growth_second_half_bytes'] / 2**20:+.1f} MiB)"
    )
    return result


def run(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "params": params,
        "import_ms": import_times(params["import_samples"]),
        "memory": memory_growth(params),
    }


if __name__ == "__main__":
    print(json.dumps(memory_child(json.loads(sys.argv[1]))))
