"""Several OS processes, one pool, one Redis: what each process alone could not promise.

Each application process is ``worker.py`` (a subprocess with its own pool); the emulators run
in the test process and count what really reached them.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Any

from gleitzeit_llm import OllamaPoolManager
from gleitzeit_llm.manager import Lease

from .conftest import run_together

MODEL = "llama3.2"


def _instances(emulators: list[Any], max_concurrent: int = 2) -> list[dict[str, Any]]:
    return [{"id": f"e{i}", "url": e.url, "max_concurrent": max_concurrent} for i, e in enumerate(emulators)]


def test_max_concurrent_caps_all_processes_together_and_least_loaded_spreads_them(
    ollama_emulators: Any, redis_server: Any, spawn: Any
) -> None:
    emulators = ollama_emulators(2, models=[MODEL], loaded=[MODEL], num_parallel=8, time_scale=0.1)
    spec = {
        "instances": _instances(emulators),
        "shared_state": {"url": redis_server.url},
        "load_balancing": {"queue_timeout": 30},
        "calls": 16,
        "concurrency": 3,  # 3 processes x 3 callers = 9 at once against 2 x 2 slots
    }
    results = run_together([spawn(spec) for _ in range(3)])

    assert [r["errors"] for r in results] == [[], [], []]
    # From the servers' own count: never more than max_concurrent at once, pool-wide.
    assert [e.max_concurrency_seen() for e in emulators] == [2, 2]
    served: Counter[str] = Counter()
    for r in results:
        served.update(r["served"])
    assert sum(served.values()) == 48
    assert min(served.values()) >= 12, served  # both instances carried their share


def test_one_process_breaker_trip_keeps_the_other_processes_away(
    ollama_emulators: Any, redis_server: Any, spawn: Any
) -> None:
    good, bad = ollama_emulators(2, models=[MODEL], loaded=[MODEL], num_parallel=8)
    bad.set_faults(error_rate=1.0)
    spec = {
        "instances": _instances([good, bad]),
        "shared_state": {"url": redis_server.url},
        "load_balancing": {
            "strategy": "round_robin",
            "retry_attempts": 1,
            "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 60},
        },
        "calls": 6,
    }
    first_process, second_process = spawn(spec), spawn(spec)  # both start up at once
    first_process.expect("ready")
    second_process.expect("ready")
    (first,) = run_together([first_process], started=True)  # pays the failures that trip its breaker
    assert first["errors"] == []
    assert len(bad.requests_for("/api/chat")) == 2

    (second,) = run_together([second_process], started=True)

    assert second["errors"] == []
    assert second["served"] == {"e0": 6}
    # Across both processes the failing instance saw failure_threshold requests, not that many
    # per process: the second never sent it one.
    assert len(bad.requests_for("/api/chat")) == 2


def test_the_slots_of_a_killed_process_come_free_after_the_lease_ttl(
    ollama_emulators: Any, redis_server: Any, spawn: Any
) -> None:
    (emulator,) = ollama_emulators(1, models=[MODEL], loaded=[MODEL])
    shared = {"url": redis_server.url, "lease_ttl": 1.0}
    instances = _instances([emulator])
    holder = spawn({"instances": instances, "shared_state": shared, "hold": 2})
    holder.expect("held")
    with OllamaPoolManager(instances=instances, shared_state=shared, health_checks=False) as pool:
        request = pool.route_request(MODEL)
        assert not isinstance(pool.try_acquire(request), Lease)  # both slots are held elsewhere

        os.kill(holder.proc.pid, signal.SIGKILL)
        lease = pool.acquire_sync(request, timeout=15)  # woken when the dead leases expire

        pool.finish(lease)
        assert pool.status()["shared_state"]["up"] is True


def test_redis_killed_mid_run_loses_no_call(ollama_emulators: Any, redis_server: Any, spawn: Any) -> None:
    # About 80 ms a call, 80 calls over 4 slots: Redis dies well inside the run.
    emulators = ollama_emulators(2, models=[MODEL], loaded=[MODEL], num_parallel=8, time_scale=0.3)
    spec = {
        "instances": _instances(emulators),
        "shared_state": {"url": redis_server.url, "reconnect_interval": 30},
        "load_balancing": {"queue_timeout": 30},
        "calls": 40,
        "concurrency": 2,
    }
    workers = [spawn(spec) for _ in range(2)]
    for worker in workers:
        worker.expect("ready")
    for worker in workers:
        worker.go()
    emulators[0].wait_for(lambda: sum(len(e.requests_for("/api/chat")) for e in emulators) >= 10)
    redis_server.kill()
    results = [worker.result() for worker in workers]

    assert [r["errors"] for r in results] == [[], []]
    assert sum(sum(r["served"].values()) for r in results) == 80
    assert [r["shared_state"]["up"] for r in results] == [False, False]  # it died mid-run
