"""Shared helpers of the scenarios: statistics, the machine record, load drivers, emulators."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]
MODEL = "llama3.2"
# Every strategy, in the order the scenarios report them.
EVERY_STRATEGY = (
    "least_loaded",
    "round_robin",
    "weighted",
    "latency_based",
    "model_affinity",
    "priority",
    "cache_aware",
)

# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median over repeated runs and how far the runs spread: min, max, IQR, every value."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "n": 0, "runs": []}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "q1": percentile(clean, 0.25),
        "q3": percentile(clean, 0.75),
        "n": len(clean),
        "runs": [round(v, 9) for v in clean],
    }


def summarise_clients(
    names: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    runs: Sequence[dict[str, dict[str, float]]],
    keys: Sequence[str],
    added: Sequence[str] = (),
) -> dict[str, Any]:
    """Per-client spreads of ``keys`` over ``runs`` (one ``{client: {key: value}}`` per run), and
    per (subject, baseline) pair the spreads of the added p50/p99 (plus ``added`` keys, as
    ``added_<key>``) and of the throughput ratio, each taken within a run."""
    table = {name: {key: spread([r[name][key] for r in runs]) for key in keys} for name in names}
    out: dict[str, Any] = {}
    for subject, baseline in pairs:
        if subject not in names or baseline not in names:
            continue
        pair: dict[str, Any] = {"subject": subject, "baseline": baseline}
        for key in ("p50_ms", "p99_ms", *added):
            pair[f"added_{key}"] = spread([r[subject][key] - r[baseline][key] for r in runs])
        pair["throughput_ratio"] = spread(
            [r[subject]["throughput_rps"] / r[baseline]["throughput_rps"] for r in runs]
        )
        out[f"{subject}-vs-{baseline}"] = pair
    return {"clients": table, "pairs": out}


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of one run's latencies, in milliseconds."""
    return {
        "n": len(latencies),
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p90_ms": percentile(latencies, 0.90) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": max(latencies) * 1e3 if latencies else math.nan,
    }


def med(summary: dict[str, Any]) -> float | None:
    return summary.get("median") if summary else None


# -- the machine ------------------------------------------------------------------------------


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (the load average is taken before and after each scenario)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    return {
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "cpu_model": cpu_model,
        "memory_bytes": mem_total,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_info(),
    }


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in (
        "gleitzeit-llm",
        "httpx",
        "httpcore",
        "pydantic",
        "ollama",
        "langchain-ollama",
        "langchain-core",
        "llama-index-llms-ollama",
        "langchain-gleitzeit",
        "llama-index-llms-gleitzeit",
        "matplotlib",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info() -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = run("status", "--porcelain", "--", "gleitzeit_llm")
    return {"commit": run("rev-parse", "HEAD"), "core_dirty": bool(status) if status is not None else None}


# -- memory -----------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- load drivers -----------------------------------------------------------------------------


@dataclass
class Sample:
    """One request as the client saw it (times from time.perf_counter, or wall clock where noted)."""

    start: float
    end: float
    ok: bool
    instance: str | None = None
    attempts: int = 1
    cold_load: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency(self) -> float:
        return self.end - self.start


async def closed_loop(
    call: Callable[[], Awaitable[Any]], concurrency: int, requests: int
) -> tuple[list[float], float, float]:
    """``concurrency`` workers issue ``requests`` calls back to back.

    Returns the latencies, the wall time and the CPU time this process spent (all its threads):
    CPU per request is far less sensitive to other processes on the machine than wall time.
    """
    latencies: list[float] = []
    left = requests
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = clock()
            await call()
            latencies.append(clock() - t0)

    c0 = time.process_time()
    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, clock() - t0, time.process_time() - c0


async def timed_window(
    call: Callable[[int], Awaitable[Any]], workers: int, warmup: float, duration: float
) -> dict[str, Any]:
    """Closed loop for ``warmup + duration`` seconds; throughput over the window after the warm-up.

    ``call(worker_index)`` lets a caller pin workers to targets. Each successful request counts
    with the share of its duration that falls inside the window (requests still running at the
    end are awaited), so a window edge never rounds away up to one request per worker.
    """
    clock = time.perf_counter
    t0 = clock()
    start, stop = t0 + warmup, t0 + warmup + duration
    ends: list[float] = []
    latencies: list[float] = []
    work = 0.0
    errors = 0

    async def worker(index: int) -> None:
        nonlocal errors, work
        while clock() < stop:
            s = clock()
            try:
                await call(index)
            except Exception:
                errors += 1
                continue
            e = clock()
            if e > s:
                work += max(0.0, min(e, stop) - max(s, start)) / (e - s)
            if start <= e < stop:
                ends.append(e)
                latencies.append(e - s)

    c0 = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    # Client CPU over the whole loop, as a share of one core: near 1.0 the client is the bottleneck.
    cpu_share = (time.process_time() - c0) / (clock() - t0)
    return {
        "completed": len(ends),
        "throughput_rps": work / duration,
        "completed_rps": len(ends) / duration,
        "client_cpu_share": cpu_share,
        "errors": errors,
        "latency": latency_summary(latencies) if latencies else None,
    }


async def open_loop(
    call: Callable[[int], Awaitable[Sample]],
    rate: float,
    count: int,
    seed: int,
    *,
    timeout: float = 120.0,
    on_arrival: Callable[[int, float], None] | None = None,
) -> list[Sample]:
    """Poisson arrivals at ``rate`` per second (seeded), ``count`` requests, each its own task.

    Arrivals do not wait for earlier requests (an open system, as real users are), so a slow
    instance shows up as latency rather than as a lower offered load.
    """
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[Sample]] = []
    t0 = loop.time()
    due = t0
    for index in range(count):
        due += rng.expovariate(rate)
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if on_arrival is not None:
            on_arrival(index, due - t0)
        tasks.append(asyncio.create_task(_guarded(call, index)))
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    results = []
    for task in tasks:
        if task in done:
            results.append(task.result())
        else:
            results.append(Sample(0.0, timeout, False, error="unfinished (bench timeout)"))
    return results


async def _guarded(call: Callable[[int], Awaitable[Sample]], index: int) -> Sample:
    start = time.perf_counter()
    try:
        return await call(index)
    except Exception as exc:  # a failed request is a result, not a crash of the benchmark
        return Sample(start, time.perf_counter(), False, error=f"{type(exc).__name__}: {exc}"[:300])


def pool_sample(start: float, reply: Any) -> Sample:
    """A Sample from a pool reply (instance, attempts, whether the model was loaded for it)."""
    info = reply.pool
    load = getattr(reply, "load_duration", None) or 0
    return Sample(
        start,
        time.perf_counter(),
        True,
        instance=info.instance_id if info else None,
        attempts=info.attempts if info else 1,
        cold_load=load / 1e9 > 0.5,
    )


def _ndjson_item(line: str) -> Any:
    return json.loads(line) if line else None


def _sse_item(line: str) -> Any:
    if not line.startswith("data: "):
        return None
    data = line[6:]
    return data if data == "[DONE]" else json.loads(data)


def chat_calls(
    http: Any, path: str = "/api/chat", *, sse: bool = False
) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]:
    """A plain (``stream: false``) and a streamed chat call of :data:`MESSAGES` through the httpx
    client ``http``; the stream is decoded item by item (NDJSON lines, or SSE events with ``sse``)
    and must end as the API ends one (``done: true``, or ``data: [DONE]``)."""
    body = {"model": MODEL, "messages": MESSAGES, "stream": False}
    body_stream = {**body, "stream": True}
    item = _sse_item if sse else _ndjson_item

    async def plain() -> Any:
        response = await http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    async def streamed() -> Any:
        last = None
        async with http.stream("POST", path, json=body_stream) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                last = item(line) or last
        if last != "[DONE]" and not (isinstance(last, dict) and last.get("done")):
            raise RuntimeError(f"{path}: the stream ended early, last {last!r}"[:300])
        return last

    return plain, streamed


# -- emulators --------------------------------------------------------------------------------


def start_emulators(count: int, **settings: Any) -> list[Any]:
    """``count`` EmulatorProcess children started in parallel (each one imports for ~0.5 s)."""
    from gleitzeit_llm.testing import EmulatorProcess

    procs = [EmulatorProcess(**settings) for _ in range(count)]
    errors: list[BaseException] = []

    def start(proc: Any) -> None:
        try:
            proc.start()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        stop_emulators(procs)
        raise errors[0]
    return procs


def stop_emulators(procs: Sequence[Any]) -> None:
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.close()


@contextlib.contextmanager
def emulators(count: int, **settings: Any) -> Iterator[list[Any]]:
    procs = start_emulators(count, **settings)
    try:
        yield procs
    finally:
        stop_emulators(procs)


def instance_list(procs: Sequence[Any], max_concurrent: int, prefix: str = "i") -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{n}", "url": p.url, "max_concurrent": max_concurrent} for n, p in enumerate(procs)
    ]


def quiet_logging() -> None:
    """Failover scenarios make the pool log warnings on purpose; keep the bench output readable."""
    import logging

    logging.getLogger("gleitzeit_llm").setLevel(logging.ERROR)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
