"""One application process of the shared-facts tests, driven line by line over stdin/stdout.

``python facts_worker.py '<json spec>'`` builds a pool (``instances``, ``load_balancing``,
``shared_state``, ``health_checks``), prints ``ready``, then answers one JSON line per command:

* ``{"op": "chat", "n": 3, "model": "llama3.2", "hints": {...}}`` -> ``{"served": {...}, "errors": [...]}``
* ``{"op": "inspect"}`` -> what the process knows of each instance (its handles), whether it
  leads the health probes and in how many health rounds it probed
* ``{"op": "quit"}`` -> closes the pool, prints ``closed`` and exits.
"""

from __future__ import annotations

import faulthandler
import json
import math
import sys
from collections import Counter
from typing import Any

from gleitzeit_llm import OllamaPoolProvider


def count_probe_rounds(pool: OllamaPoolProvider) -> list[int]:
    """Count the health rounds in which this process probed (a follower's rounds probe nothing)."""
    monitor = pool.manager._monitor
    targets = monitor._targets
    rounds = [0]

    def counted() -> Any:
        chosen = targets()
        if chosen:
            rounds[0] += 1
        return chosen

    monitor._targets = counted
    return rounds


def inspect(pool: OllamaPoolProvider, probe_rounds: list[int]) -> dict[str, Any]:
    manager = pool.manager
    now = manager._clock()
    shared = manager._shared
    out: dict[str, Any] = {
        "leading": bool(getattr(getattr(shared, "election", None), "should_probe", bool)()),
        "probe_rounds": probe_rounds[0],
        "instances": {},
    }
    with manager._lock:
        for inst in manager._instances:
            ttft = inst.metrics.ttft.value_at(now)
            out["instances"][inst.id] = {
                "state": inst.state.value,
                "version": inst.version,
                "ttft": ttft,
                "in_flight": inst.in_flight,
                "busy_for": max(inst.busy_until - now, 0.0),
                "missing": sorted(inst.missing_models),
                "loaded": sorted(m for m, until in inst.loaded_models.items() if until > now),
                "resident_for": {
                    m: (None if math.isinf(until) else until - now) for m, until in inst.loaded_models.items()
                },
            }
    return out


def main(spec: dict[str, Any]) -> None:
    pool = OllamaPoolProvider(
        instances=spec["instances"],
        load_balancing=spec.get("load_balancing"),
        shared_state=spec.get("shared_state"),
        health_checks=spec.get("health_checks", False),
    )
    probe_rounds = count_probe_rounds(pool)
    with pool:
        print("ready", flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            if op == "quit":
                # Closing must not hang: if it takes 20 s, the stacks go to stderr for the test.
                faulthandler.dump_traceback_later(20, exit=False)
                break
            if op == "inspect":
                reply: dict[str, Any] = inspect(pool, probe_rounds)
            elif op == "chat":
                served: Counter[str] = Counter()
                errors: list[str] = []
                for _ in range(command.get("n", 1)):
                    try:
                        answer = pool.chat_sync(
                            command.get("model", "llama3.2"),
                            [{"role": "user", "content": "hi"}],
                            **command.get("hints", {}),
                        )
                        served[answer.pool.instance_id] += 1
                    except Exception as exc:  # reported: the test decides
                        errors.append(f"{type(exc).__name__}: {exc}")
                reply = {"served": dict(served), "errors": errors}
            else:
                reply = {"error": f"unknown op {op!r}"}
            print(json.dumps(reply), flush=True)
    faulthandler.cancel_dump_traceback_later()
    print("closed", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
