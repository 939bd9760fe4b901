"""Scenario 8, scale-out: four application processes on one pool, with and without shared state.

Every application process is a child (``python -m bench.scenarios.scaleout client``) that builds
its own ``OllamaPoolProvider`` over the same instances for each part; ``local`` runs give each
its own state (as before #15), ``shared`` runs share it through one ``redis-server`` (started
here, on loopback).
Each instance is an emulator process that accepts more than ``max_concurrent`` at once
(``num_parallel`` = processes x c), so a cap that does not hold pool-wide shows in the servers'
own peak concurrency.

Three parts, each measured for ``local`` and ``shared`` in the same run:

* **throughput and the global cap**: ``2*N*c`` closed-loop callers in all, spread over the
  processes, for the same wall-clock window against N instances of service time t and
  ``max_concurrent`` c. The pool-wide limit is N*c/t; the servers' peak concurrency says whether
  c held (``local``: each process takes its own c, so the servers see more).
* **a breaker trip reaching every process**: process 0 calls steadily, the others lightly (one
  call every ``light_every`` s); then one instance starts failing every call. Each process
  notes (wall clock) when its breaker for that instance opened; the spread from the first to the
  last process, and how many failed calls the failing instance took in all.
* **added latency per call**: in this process, sequential calls (concurrency 1) through two pools
  on one instance with zero model time, one pool with shared state and one without, alternating
  in blocks; p50 of each, and the round trips to Redis per call counted on the calling thread
  (the background refresh runs on its own thread and is not a per-call cost).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench._util import (
    MESSAGES,
    MODEL,
    ROOT,
    emulators,
    latency_summary,
    log,
    percentile,
    spread,
)

PARAMS = {
    "full": {
        "runs": 3,
        "processes": 4,
        "instances": 2,
        "max_concurrent": 2,
        "service_time": 0.2,
        "warmup": 0.6,
        "window": 3.0,
        "breaker_threshold": 2,
        "light_every": 0.25,
        "breaker_wait": 4.0,
        "latency_calls": 600,
        "latency_block": 50,
    },
    "quick": {
        "runs": 1,
        "processes": 4,
        "instances": 2,
        "max_concurrent": 2,
        "service_time": 0.2,
        "warmup": 0.4,
        "window": 1.2,
        "breaker_threshold": 2,
        "light_every": 0.25,
        "breaker_wait": 3.0,
        "latency_calls": 200,
        "latency_block": 25,
    },
}

MODES = ("local", "shared")


# -- the application process --------------------------------------------------------------------


async def _client() -> None:
    """One application process: for each command from stdin, a fresh pool (the command's
    ``spec``), the command's calls, one JSON answer line. One process serves every part and mode:
    starting interpreters is the slow part of a multi-process run."""
    from gleitzeit_llm import OllamaPoolProvider
    from gleitzeit_llm.observability.events import BreakerStateChanged

    print("ready", flush=True)
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        if command["op"] == "quit":
            return
        spec = command["spec"]
        pool = OllamaPoolProvider(
            instances=spec["instances"],
            load_balancing=spec.get("load_balancing"),
            shared_state=spec.get("shared_state"),
            health_checks=False,
        )
        opened: dict[str, float] = {}

        def note(event: Any, opened: dict[str, float] = opened) -> None:
            if isinstance(event, BreakerStateChanged) and event.new == "open":
                opened.setdefault(event.instance, time.time())

        pool.events.subscribe(note)
        async with pool:
            # Ready to call (imports done, Redis connected): the harness then sends when to start,
            # the same wall-clock moment for every process.
            print("armed", flush=True)
            command.update(json.loads(await asyncio.to_thread(sys.stdin.readline)))
            if command["op"] == "window":
                reply = await _aligned_window(pool, command)
            elif command["op"] == "steady":
                reply = await _steady(pool, command, opened)
            else:
                reply = {"error": f"unknown op {command['op']!r}"}
        print(json.dumps(reply), flush=True)


async def _aligned_window(pool: Any, command: dict[str, Any]) -> dict[str, Any]:
    """:func:`bench._util.timed_window` on the wall clock: every process starts at ``start`` and
    counts the same window, so their throughputs add up (windows that did not overlap would count
    one process's calls while another was still warming up)."""
    await asyncio.sleep(max(command["start"] - time.time(), 0.0))
    begin = command["start"] + command["warmup"]
    stop = begin + command["window"]
    work = 0.0
    errors = 0
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal work, errors
        while time.time() < stop:
            s = time.time()
            try:
                await pool.chat(MODEL, MESSAGES)
            except Exception:
                errors += 1
                continue
            e = time.time()
            if e > s:
                work += max(0.0, min(e, stop) - max(s, begin)) / (e - s)
            if begin <= e < stop:
                latencies.append(e - s)

    await asyncio.gather(*(worker() for _ in range(command["workers"])))
    return {
        "throughput_rps": work / command["window"],
        "errors": errors,
        "latency": latency_summary(latencies) if latencies else None,
    }


async def _steady(pool: Any, command: dict[str, Any], opened: dict[str, float]) -> dict[str, Any]:
    """Call every ``every`` s (0: back to back, ``workers`` at once) until ``until`` (wall clock)."""
    errors = calls = 0
    until, every = command["until"], command["every"]

    async def worker() -> None:
        nonlocal errors, calls
        while time.time() < until:
            started = time.perf_counter()
            try:
                await pool.chat(MODEL, MESSAGES)
            except Exception:
                errors += 1
            calls += 1
            if every:
                await asyncio.sleep(max(every - (time.perf_counter() - started), 0.0))

    await asyncio.gather(*(worker() for _ in range(command["workers"])))
    return {"opened_at": opened.get(command["target"]), "calls": calls, "errors": errors}


class _Client:
    def __init__(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios.scaleout", "client"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process ended with {self.proc.wait()}")
        return line.strip()

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="quit")
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@contextmanager
def _clients(count: int) -> Iterator[list[_Client]]:
    clients = [_Client() for _ in range(count)]
    try:
        for client in clients:
            if client.read() != "ready":
                raise RuntimeError("a client process did not start")
        yield clients
    finally:
        for client in clients:
            client.close()


def _arm_all(clients: list[_Client], commands: list[dict[str, Any]]) -> None:
    """Send each client its command and wait until every one has its pool ready."""
    for client, command in zip(clients, commands, strict=True):
        client.send(**command)
    for client in clients:
        if client.read() != "armed":
            raise RuntimeError("a client process could not build its pool")


def _go_all(clients: list[_Client], **timing: Any) -> list[dict[str, Any]]:
    """Tell every armed client when to start; their answers."""
    for client in clients:
        client.send(**timing)
    return [json.loads(client.read()) for client in clients]


# -- the parts ----------------------------------------------------------------------------------


def _instances(procs: list[Any], c: int) -> list[dict[str, Any]]:
    return [{"id": f"i{n}", "url": p.url, "max_concurrent": c} for n, p in enumerate(procs)]


def _throughput(
    params: dict[str, Any], procs: list[Any], clients: list[_Client], shared: dict[str, Any] | None
) -> dict[str, Any]:
    n, c, count = params["instances"], params["max_concurrent"], params["processes"]
    spec = {
        "instances": _instances(procs, c),
        "shared_state": shared,
        "load_balancing": {"queue_timeout": 60},
    }
    for proc in procs:
        proc.clear_log()  # also resets the servers' peak concurrency
    command = {
        "op": "window",
        "spec": spec,
        # 2*N*c callers in all, as the scaling scenario: enough to keep every slot busy.
        "workers": max(1, 2 * n * c // count),
        "warmup": params["warmup"],
        "window": params["window"],
    }
    _arm_all(clients, [command] * count)
    results = _go_all(clients, start=time.time() + 0.2)
    peaks = [proc.state()["max_concurrency"] for proc in procs]
    limit = n * c / params["service_time"]
    total = sum(r["throughput_rps"] for r in results)
    return {
        "throughput_rps": total,
        "vs_limit": total / limit,
        "peak_concurrency": peaks,
        "cap_violations": sum(1 for p in peaks if p > c),
        "excess_slots": max(peaks) - c,
        "errors": sum(r["errors"] for r in results),
        "p50_ms": percentile([r["latency"]["p50_ms"] for r in results if r["latency"]], 0.5),
    }


def _breaker(
    params: dict[str, Any], procs: list[Any], clients: list[_Client], shared: dict[str, Any] | None
) -> dict[str, Any]:
    count, threshold = params["processes"], params["breaker_threshold"]
    spec = {
        "instances": _instances(procs, 8),
        "shared_state": shared,
        "load_balancing": {
            "strategy": "round_robin",
            "queue_timeout": 10,
            "circuit_breaker": {"failure_threshold": threshold, "recovery_timeout": 600},
        },
    }
    target = procs[-1]
    target_id = f"i{len(procs) - 1}"
    for proc in procs:
        proc.clear_faults()
        proc.clear_log()
    heavy = {"op": "steady", "spec": spec, "workers": 4, "every": 0, "target": target_id}
    light = {**heavy, "workers": 1, "every": params["light_every"]}
    _arm_all(clients, [heavy] + [light] * (count - 1))
    fail_at = time.time() + 0.5  # every client is calling by then
    for client in clients:
        client.send(until=fail_at + params["breaker_wait"])
    time.sleep(max(fail_at - time.time(), 0.0))  # the harness's schedule, not a wait for a condition
    target.set_faults(error_rate=1.0)
    results = [json.loads(client.read()) for client in clients]
    target.clear_faults()
    failed = [r for r in target.requests() if r["path"] == "/api/chat" and r["status"] >= 500]
    opened = [r["opened_at"] for r in results]
    known = [t for t in opened if t is not None]
    return {
        "opened_in": sum(1 for t in opened if t is not None),
        "processes": count,
        "first_trip_after_s": (min(known) - fail_at) if known else None,
        "reach_all_s": (max(known) - min(known)) if len(known) == count else None,
        "failed_calls_at_target": len(failed),
        "failed_calls_per_process": len(failed) / count,
        "errors": sum(r["errors"] for r in results),
    }


class _SendCounter:
    """Counts the requests redis-py sends (a pipeline is one) on the thread that counts."""

    def __init__(self) -> None:
        from redis.connection import AbstractConnection

        self._cls = AbstractConnection
        self._original = AbstractConnection.send_packed_command
        self.thread: int | None = None
        self.sent = 0
        counter = self

        def send(conn: Any, command: Any, check_health: bool = True) -> None:
            if threading.get_ident() == counter.thread:
                counter.sent += 1
            counter._original(conn, command, check_health)

        AbstractConnection.send_packed_command = send  # type: ignore[method-assign]

    def close(self) -> None:
        self._cls.send_packed_command = self._original  # type: ignore[method-assign]


def _latency(params: dict[str, Any], proc: Any, shared: dict[str, Any]) -> dict[str, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    instances = [{"id": "i0", "url": proc.url, "max_concurrent": 8}]
    counter = _SendCounter()
    pools = {
        "local": OllamaPoolProvider(instances=instances, health_checks=False),
        "shared": OllamaPoolProvider(instances=instances, shared_state=shared, health_checks=False),
    }
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, float] = dict.fromkeys(MODES, 0.0)
    sent = 0
    try:
        for pool in pools.values():
            pool.initialize_sync()
            for _ in range(20):  # connections open, scripts loaded
                pool.chat_sync(MODEL, MESSAGES)
        counter.thread = threading.get_ident()
        block = params["latency_block"]
        for start in range(0, params["latency_calls"], block):
            for mode in MODES if (start // block) % 2 == 0 else reversed(MODES):
                pool = pools[mode]
                before = counter.sent
                c0 = time.thread_time()
                for _ in range(block):
                    t0 = time.perf_counter()
                    pool.chat_sync(MODEL, MESSAGES)
                    samples[mode].append(time.perf_counter() - t0)
                cpu[mode] += time.thread_time() - c0
                if mode == "shared":
                    sent += counter.sent - before
    finally:
        counter.close()
        for pool in pools.values():
            pool.close_sync()
    p50 = {mode: percentile(samples[mode], 0.5) * 1e3 for mode in MODES}
    return {
        "local": latency_summary(samples["local"]),
        "shared": latency_summary(samples["shared"]),
        "added_p50_ms": p50["shared"] - p50["local"],
        "added_mean_ms": (statistics.fmean(samples["shared"]) - statistics.fmean(samples["local"])) * 1e3,
        # CPU of the calling thread per call: far less sensitive to a loaded machine than time.
        "local_cpu_us": cpu["local"] / len(samples["local"]) * 1e6,
        "shared_cpu_us": cpu["shared"] / len(samples["shared"]) * 1e6,
        "added_cpu_us": (cpu["shared"] / len(samples["shared"]) - cpu["local"] / len(samples["local"])) * 1e6,
        "round_trips_per_call": sent / len(samples["shared"]),
    }


# -- the scenario -------------------------------------------------------------------------------


def run(params: dict[str, Any]) -> dict[str, Any]:
    from gleitzeit_llm.testing.redis_server import RedisServer

    n, c, count = params["instances"], params["max_concurrent"], params["processes"]
    settings = {
        "models": [MODEL],
        "loaded": [MODEL],
        "time_scale": 1.0,
        "num_parallel": count * c,  # the server would take more than the cap: violations show
        "ttft": params["service_time"],
        "prompt_tokens_per_second": 0,
        "tokens_per_second": 0,
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {"throughput": [], "breaker": []} for m in MODES}
    latency: list[dict[str, Any]] = []
    with RedisServer() as redis_server, emulators(n, **settings) as procs, _clients(count) as clients:
        for run_index in range(params["runs"]):
            order = MODES if run_index % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                # A namespace per run: no run inherits another's leases, breakers or facts.
                shared = (
                    {"url": redis_server.url, "namespace": f"bench-{run_index}-{mode}"}
                    if mode == "shared"
                    else None
                )
                got = _throughput(params, procs, clients, shared)
                runs[mode]["throughput"].append(got)
                log(
                    f"scaleout run {run_index + 1} {mode}: {got['throughput_rps']:.1f}/s "
                    f"({got['vs_limit'] * 100:.0f} % of N*c/t), peak concurrency {got['peak_concurrency']}"
                )
                if mode == "shared":
                    shared = {**shared, "namespace": f"bench-{run_index}-breaker"}
                trip = _breaker(params, procs, clients, shared)
                runs[mode]["breaker"].append(trip)
                log(
                    f"scaleout run {run_index + 1} {mode}: breaker open in {trip['opened_in']}/{count} "
                    f"processes, reach all {trip['reach_all_s']}, failed calls at target "
                    f"{trip['failed_calls_at_target']}"
                )
        with emulators(1, **{**settings, "ttft": 0, "num_parallel": 8}) as (zero,):
            for run_index in range(params["runs"]):
                got = _latency(
                    params, zero, {"url": redis_server.url, "namespace": f"bench-latency-{run_index}"}
                )
                latency.append(got)
                log(
                    f"scaleout latency run {run_index + 1}: p50 local {got['local']['p50_ms']:.3f} ms, "
                    f"shared {got['shared']['p50_ms']:.3f} ms, "
                    f"{got['round_trips_per_call']:.2f} round trips/call, "
                    f"added CPU {got['added_cpu_us']:.0f} us/call"
                )
    out: dict[str, Any] = {"params": params, "limit_rps": n * c / params["service_time"], "by_mode": {}}
    for mode in MODES:
        thr, brk = runs[mode]["throughput"], runs[mode]["breaker"]
        out["by_mode"][mode] = {
            "throughput_rps": spread([r["throughput_rps"] for r in thr]),
            "vs_limit": spread([r["vs_limit"] for r in thr]),
            "peak_concurrency": max(max(r["peak_concurrency"]) for r in thr),
            "cap_violations": sum(r["cap_violations"] for r in thr),
            "throughput_errors": sum(r["errors"] for r in thr),
            "p50_ms": spread([r["p50_ms"] for r in thr]),
            "breaker_reach_all_s": spread([r["reach_all_s"] for r in brk if r["reach_all_s"] is not None]),
            "breaker_first_trip_s": spread(
                [r["first_trip_after_s"] for r in brk if r["first_trip_after_s"] is not None]
            ),
            "breaker_opened_in": [r["opened_in"] for r in brk],
            "failed_calls_at_target": spread([r["failed_calls_at_target"] for r in brk]),
            "breaker_errors": sum(r["errors"] for r in brk),
        }
    out["latency"] = {
        "local_p50_ms": spread([r["local"]["p50_ms"] for r in latency]),
        "shared_p50_ms": spread([r["shared"]["p50_ms"] for r in latency]),
        "added_p50_ms": spread([r["added_p50_ms"] for r in latency]),
        "added_mean_ms": spread([r["added_mean_ms"] for r in latency]),
        "added_cpu_us": spread([r["added_cpu_us"] for r in latency]),
        "shared_cpu_us": spread([r["shared_cpu_us"] for r in latency]),
        "round_trips_per_call": spread([r["round_trips_per_call"] for r in latency]),
    }
    out["emulator"] = settings
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["client"]:
        from bench._util import quiet_logging

        quiet_logging()
        asyncio.run(_client())
    else:
        raise SystemExit("usage: python -m bench.scenarios.scaleout client (run by the scenario)")
