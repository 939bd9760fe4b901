"""One application process of the multi-process tests: a pool on the given instances (and Redis),
driven as the test says. Prints ``ready``, waits for a line on stdin, runs, prints its result as
one JSON line. Run as ``python worker.py '<json spec>'``.

spec: ``instances``, ``shared_state`` (or null), ``load_balancing``, ``calls``, ``concurrency``,
``hold`` (acquire this many slots, print ``held`` and wait to be killed).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections import Counter
from typing import Any

from gleitzeit_llm import OllamaPoolProvider


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    pool = OllamaPoolProvider(
        instances=spec["instances"],
        load_balancing=spec.get("load_balancing"),
        shared_state=spec.get("shared_state"),
        health_checks=False,
    )
    served: Counter[str] = Counter()
    errors: list[str] = []
    async with pool:
        if spec.get("hold"):
            manager = pool.manager
            for _ in range(spec["hold"]):
                await manager.acquire(manager.route_request("llama3.2"))
            print("held", flush=True)
            await asyncio.to_thread(threading.Event().wait)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        left = spec["calls"]

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                try:
                    answer = await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
                    served[answer.pool.instance_id] += 1
                except Exception as exc:  # reported, the test decides
                    errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(caller() for _ in range(spec.get("concurrency", 1))))
        status = pool.status()
    return {"served": dict(served), "errors": errors, "shared_state": status.get("shared_state")}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
