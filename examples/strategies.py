"""Load balancing strategies and tag routing, chosen per call.

Every strategy of the guide is a per-call hint (``load_balancing_strategy``) on top of the pool's
default (``load_balancing.strategy``). This script sends 30 chat calls with each one, four at a
time, and prints which share of them each instance served.

    .venv/bin/python examples/strategies.py

Emulated pool: ``gpu-1`` is fast, has the large model resident and carries the tags gpu and
high-memory; ``cpu-1`` and ``cpu-2`` are slower CPU boxes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from _servers import MODEL, servers

from gleitzeit_llm import GleitzeitError, OllamaPoolProvider

CALLS = 30
BIG_MODEL = "mixtral:8x7b"  # the guide's model_affinity example


async def share(provider: OllamaPoolProvider, label: str, model: str = MODEL, **hints: Any) -> None:
    """Run CALLS chat calls with these routing hints, 4 at a time; print the share per instance."""
    served: Counter[str] = Counter()
    gate = asyncio.Semaphore(4)

    async def one(n: int) -> None:
        async with gate:
            reply = await provider.chat(
                model,
                [{"role": "user", "content": f"Question {n}"}],
                options={"num_predict": 16},  # short answers: only the routing matters here
                **hints,
            )
            served[reply.pool.instance_id] += 1

    try:
        await asyncio.gather(*(one(n) for n in range(CALLS)))
    except GleitzeitError as exc:  # e.g. no instance carries the requested tags
        print(f"{label:<34} failed: {exc}")
        return
    shares = "  ".join(f"{i} {round(100 * served[i] / CALLS):>3}%" for i in provider.status()["instances"])
    print(f"{label:<34} {shares}")


async def main() -> None:
    with servers(
        [
            {
                "id": "gpu-1",
                "tags": ["gpu", "high-memory"],
                "tokens_per_second": 200,
                "loaded": ["llama3.2", BIG_MODEL],
            },
            {"id": "cpu-1", "tags": ["cpu"], "tokens_per_second": 30, "ttft": 0.3},
            {"id": "cpu-2", "tags": ["cpu"], "tokens_per_second": 30, "ttft": 0.3},
        ],
        models=["llama3.2", BIG_MODEL],
        num_parallel=4,
    ) as instances:
        big = BIG_MODEL if instances.emulated else MODEL

        # 5. Weighted: "In configuration" -- a weight per instance, 3.0 is three times as likely as 1.0.
        instances[0]["weight"] = 3.0
        for other in instances[1:]:
            other["weight"] = 1.0

        async with OllamaPoolProvider(instances=instances) as provider:
            print(f"{CALLS} calls per line, share of calls per instance:")
            # 1. Least loaded (the default): fewest requests in flight relative to max_concurrent.
            await share(provider, "least_loaded", load_balancing_strategy="least_loaded")
            # 2. Round robin: in turn, regardless of load.
            await share(provider, "round_robin", load_balancing_strategy="round_robin")
            # 3. Model affinity: where the model is already loaded (no 10-30 s cold load).
            await share(
                provider, f"model_affinity ({big})", load_balancing_strategy="model_affinity", model=big
            )
            # 4. Latency based: lowest recent time to first token and per-token time, as measured.
            await share(provider, "latency_based", load_balancing_strategy="latency_based")
            # 5. Weighted: in proportion to the weights set above.
            weights = " / ".join(f"{i['weight']:g}" for i in instances)
            await share(provider, f"weighted ({weights})", load_balancing_strategy="weighted")
            # 6. Tag-based routing: only instances that carry all the tags; require_gpu means tag "gpu".
            await share(provider, "instance_tags=[gpu, high-memory]", instance_tags=["gpu", "high-memory"])
            await share(provider, "require_gpu=True", require_gpu=True)
            await share(
                provider,
                "instance_tags=[cpu] + round_robin",
                instance_tags=["cpu"],
                load_balancing_strategy="round_robin",
            )


if __name__ == "__main__":
    asyncio.run(main())
