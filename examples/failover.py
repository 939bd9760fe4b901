"""Health Monitoring & Failover: an instance dies mid-run, every request still succeeds.

Three instances serve chat calls. Then ``ollama-2`` is stopped (like a crashed server or a
reclaimed spot machine): calls that hit it are retried on another instance, and its circuit
breaker opens after two failures, which takes it out of rotation. When it is started again a
health check sees it, the breaker lets probe requests through, and it is back in rotation.

    .venv/bin/python examples/failover.py

With real servers nothing is stopped; stop one of yours while it runs to see the same.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from _servers import MODEL, servers

from gleitzeit_llm import InstanceState, OllamaPoolManager, OllamaPoolProvider
from gleitzeit_llm.observability import BreakerStateChanged, FailoverEvent, HealthStateChanged, PoolEvent

# Fast settings so the demo takes seconds; the defaults are in the comments.
RECOVERY_TIMEOUT = 1.0  # default 60 s: how long a breaker stays open before probe requests
LOAD_BALANCING = {
    "strategy": "least_loaded",
    "failover": True,  # retry a failed request on another instance (the default)
    "retry_attempts": 3,  # attempts beyond the first
    "retry_backoff_base": 0.01,  # default 0.05 s
    # Health checks also notice a dead server. Every 5 s (default 30 s) they are slower than this
    # demo, so here failing requests trip the breaker first.
    "health_check_interval": 5,
    "health_check_timeout": 0.5,  # default 5 s
}


def show(event: PoolEvent) -> None:
    """Print breaker and health changes as they happen (events arrive from the pool's threads)."""
    if isinstance(event, (BreakerStateChanged, HealthStateChanged)):
        what = "breaker" if isinstance(event, BreakerStateChanged) else "health"
        print(f"  [{what}] {event.instance}: {event.old} -> {event.new} ({event.reason})")
    elif isinstance(event, FailoverEvent):
        print(f"  [failover] attempt {event.attempt} on {event.from_instance} failed; trying another")


async def run(provider: OllamaPoolProvider, label: str, calls: int) -> None:
    """`calls` chat calls, 3 at a time; report who served them and how many needed a retry."""
    served: Counter[str] = Counter()
    retried = 0
    gate = asyncio.Semaphore(3)

    async def one(n: int) -> None:
        nonlocal retried
        async with gate:
            reply = await provider.chat(
                MODEL,
                [{"role": "user", "content": f"Request {n}"}],
                options={"num_predict": 16},  # short answers: only the routing matters here
            )
            served[reply.pool.instance_id] += 1
            retried += reply.pool.attempts > 1

    await asyncio.gather(*(one(n) for n in range(calls)))  # raises if any call failed
    print(
        f"{label}: {sum(served.values())}/{calls} succeeded ({retried} after a retry), "
        f"served by {dict(sorted(served.items()))}"
    )


async def main() -> None:
    with servers(3, num_parallel=2) as instances:
        # The guide's fix for "Slow failover": fail fast after few errors, try recovery soon
        # (the guide uses 3 failures and 30 s). The provider runs its calls through this manager.
        pool = OllamaPoolManager(
            instances=instances,
            circuit_breaker_config={"failure_threshold": 2, "recovery_timeout": RECOVERY_TIMEOUT},
            load_balancing=LOAD_BALANCING,
        )
        async with OllamaPoolProvider(manager=pool) as provider:
            provider.events.subscribe(show)
            await run(provider, "all up", 15)

            victim = instances.emulators.get("ollama-2")  # None with real servers
            if victim is not None:
                print("!! stopping ollama-2")
                victim.stop()  # connections are refused from now on
            else:
                print("(real servers: nothing is stopped; stop one of yours now to see a failover)")
            await run(provider, "one down" if victim is not None else "second round", 30)
            print(f"status: {status_line(provider)}")

            if victim is not None:
                print("!! starting ollama-2 again")
                victim.start()  # same port
                await provider.manager.acheck_health_now()  # a health check round now, not in 5 s
                await asyncio.sleep(RECOVERY_TIMEOUT)  # the breaker goes half-open, then closes
            await run(provider, "recovered" if victim is not None else "third round", 30)
            print(f"status: {status_line(provider)}")
            healthy = [
                n for n, i in provider.status()["instances"].items() if i["state"] == InstanceState.HEALTHY
            ]
            print(f"healthy: {len(healthy)}/{len(instances)}")


def status_line(provider: OllamaPoolProvider) -> str:
    return ", ".join(
        f"{name} {info['state']} (breaker {info['circuit_state']})"
        for name, info in provider.status()["instances"].items()
    )


if __name__ == "__main__":
    asyncio.run(main())
