"""Soak: many calls through one pool against emulated servers in their own processes, with a
fault every few thousand calls; memory and open sockets are sampled as it goes.

    python tests/chaos/soak.py --calls 100000

Reports the resident memory and the number of open file descriptors of this process after a
warm-up and at every sample, and the growth between the first and the last sample.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from typing import Any

from gleitzeit_llm import GleitzeitError, OllamaPoolProvider
from gleitzeit_llm.testing import EmulatorProcess

MESSAGES = [{"role": "user", "content": "hello"}]


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def soak(calls: int, concurrency: int, fault_every: int, samples: int) -> dict[str, Any]:
    servers = [
        EmulatorProcess(models=["llama3.2", "nomic-embed-text"], loaded=["llama3.2", "nomic-embed-text"],
                        num_parallel=8, keep_alive=-1, time_scale=0)
        for _ in range(3)
    ]  # fmt: skip
    for server in servers:
        server.start()
    pool = OllamaPoolProvider(
        instances=[{"id": f"e{n}", "url": s.url, "max_concurrent": 8} for n, s in enumerate(servers)],
        load_balancing={
            "health_check_interval": 1.0,
            "retry_backoff_base": 0.005,
            "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 1.0},
        },
    )
    done = failed = 0
    faults: list[str] = []
    points: list[dict[str, Any]] = []
    step = max(1, calls // samples)
    started = time.monotonic()

    async def one(n: int) -> None:
        nonlocal done, failed
        try:
            if n % 5 == 0:
                await pool.embed("nomic-embed-text", ["soak"])
            elif n % 5 == 1:
                async for _ in pool.stream_chat("llama3.2", MESSAGES):
                    pass
            else:
                await pool.chat("llama3.2", MESSAGES)
        except GleitzeitError:
            failed += 1
        done += 1

    async def worker(offset: int) -> None:
        n = offset
        while n < calls:
            await one(n)
            n += concurrency
            if n % fault_every < concurrency and offset == 0:
                victim = servers[(n // fault_every) % len(servers)]
                faults.append(f"restart {victim.url} at call {n}")
                await asyncio.to_thread(victim.restart)
            if offset == 0 and (n // concurrency) % max(1, step // concurrency) == 0:
                gc.collect()
                points.append({"calls": done, "rss_mb": round(rss_mb(), 1), "open_fds": open_fds()})

    async with pool:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        gc.collect()
        points.append({"calls": done, "rss_mb": round(rss_mb(), 1), "open_fds": open_fds()})
        status = pool.status()
    for server in servers:
        server.close()
    warm = points[min(1, len(points) - 1)]  # after the first sample: caches and pools are warm
    return {
        "calls": done,
        "failed": failed,
        "seconds": round(time.monotonic() - started, 1),
        "faults": faults,
        "samples": points,
        "rss_growth_mb": round(points[-1]["rss_mb"] - warm["rss_mb"], 1),
        "fd_growth": points[-1]["open_fds"] - warm["open_fds"],
        "active_requests_at_end": status["active_requests"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fault-every", type=int, default=10_000, help="restart one server every N calls")
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(soak(args.calls, args.concurrency, args.fault_every, args.samples))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
