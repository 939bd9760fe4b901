"""Monitoring Dashboard: the guide's ``monitor_pool`` loop next to a running workload.

``get_pool_status()`` is cheap and changes nothing, so a dashboard may call it as often as it
likes. The guide's loop runs forever every 5 s; here it refreshes 3 times, every half second,
while chat calls run in the background. In the emulated pool ``ollama-3`` fails one request in
four: its error rate shows, and the pool retries those calls elsewhere.

    .venv/bin/python examples/monitoring_dashboard.py
"""

from __future__ import annotations

import asyncio
import contextlib

from _servers import MODEL, servers

from gleitzeit_llm import OllamaPoolProvider


async def monitor_pool(pool_manager, refreshes: int = 3, interval: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    for _ in range(refreshes):  # the guide: `while True:`
        status = await pool_manager.get_pool_status()

        print("\n=== Ollama Pool Status ===")
        print(f"Total: {status['total_instances']}")
        print(f"Healthy: {status['healthy_instances']}")

        for instance_id, info in status["instances"].items():
            print(f"\n{instance_id}:")
            print(f"  State: {info['state']}")
            print(f"  Active: {info['active_requests']}")
            print(f"  Avg Response: {info['avg_response_time']:.2f}s")
            print(f"  Error Rate: {info['error_rate']:.1f}%")

        await asyncio.sleep(interval)  # the guide: 5 seconds


async def workload(provider: OllamaPoolProvider, concurrency: int = 6) -> None:
    """Chat calls, `concurrency` at a time, until cancelled."""

    async def worker(n: int) -> None:
        while True:
            await provider.chat(
                MODEL,
                [{"role": "user", "content": f"Status report {n}"}],
                options={"num_predict": 16},  # short answers: only the routing matters here
            )

    await asyncio.gather(*(worker(n) for n in range(concurrency)))


async def main() -> None:
    with servers(3, num_parallel=2, tokens_per_second=20) as instances:
        if instances.emulated:  # ollama-3 answers one request in four with HTTP 500
            instances.emulators["ollama-3"].set_faults(error_rate=0.25)
        async with OllamaPoolProvider(instances=instances) as provider:
            background = asyncio.create_task(workload(provider))
            try:
                await asyncio.sleep(0.3)  # let the workload get going
                await monitor_pool(provider.manager)  # the OllamaPoolManager behind the provider
            finally:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            # "Available Metrics": the rest of the guide's fields (the status holds more; see the docs).
            status = await provider.manager.get_pool_status()
            print(
                f"\n{status['total_instances']} instances: {status['healthy_instances']} healthy, "
                f"{status['degraded_instances']} degraded, {status['unhealthy_instances']} unhealthy"
            )
            # Troubleshooting "Uneven load distribution": in-flight requests and breakers per instance.
            for instance_id, info in status["instances"].items():
                print(
                    f"{instance_id}: {info['active_requests']} active, CB: {info['circuit_breaker_open']}, "
                    f"{info['total_requests']} requests, availability {info['availability']:.1f}%, "
                    f"loaded {info['models_loaded']}"
                )


if __name__ == "__main__":
    asyncio.run(main())
