"""Performance Tuning: the guide's three configurations, validated, shown, and used.

``PoolConfig.from_dict`` takes the guide's dict form and fills in every default, so printing the
result shows the whole effective configuration, not just the keys you wrote.

    .venv/bin/python examples/performance_tuning.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _servers import MODEL, servers

from gleitzeit_llm import OllamaPoolProvider, PoolConfig


def tuned(instances: list[dict[str, Any]]) -> dict[str, PoolConfig]:
    return {
        # Optimize for Throughput
        "throughput": PoolConfig.from_dict(
            {
                "instances": instances,
                "load_balancing": {
                    "strategy": "least_loaded",
                    "health_check_interval": 60,  # Less frequent checks
                },
            }
        ),
        # Optimize for Latency
        "latency": PoolConfig.from_dict(
            {
                "instances": instances,
                "load_balancing": {
                    "strategy": "latency_based",
                    "health_check_interval": 10,  # More frequent checks
                },
            }
        ),
        # Optimize for Reliability
        "reliability": PoolConfig.from_dict(
            {
                "instances": instances,
                "load_balancing": {
                    "strategy": "least_loaded",
                    "failover": True,
                    "retry_attempts": 5,
                    "circuit_breaker": {
                        "failure_threshold": 2,  # Fail fast
                        "recovery_timeout": 120,  # Slower recovery
                    },
                },
            }
        ),
    }


async def main() -> None:
    with servers(3, num_parallel=2) as instances:
        for name, config in tuned(instances).items():
            lb, cb = config.load_balancing, config.load_balancing.circuit_breaker
            print(f"\n{name}:")
            print(
                f"  strategy={lb.strategy.value} health_check_interval={lb.health_check_interval:g}s "
                f"failover={lb.failover} retry_attempts={lb.retry_attempts}"
            )
            print(
                f"  circuit_breaker: failure_threshold={cb.failure_threshold} "
                f"recovery_timeout={cb.recovery_timeout:g}s half_open_requests={cb.half_open_requests}"
            )

            # A few calls with this configuration, all sent at once.
            async with OllamaPoolProvider(config=config) as provider:
                started = time.perf_counter()
                questions = [[{"role": "user", "content": f"Question {n}"}] for n in range(8)]
                replies = await asyncio.gather(
                    *(provider.chat(MODEL, q, options={"num_predict": 16}) for q in questions)
                )
                elapsed = time.perf_counter() - started
            used = sorted({r.pool.instance_id for r in replies})
            print(f"  8 calls in {elapsed * 1000:.0f} ms on {', '.join(used)}")


if __name__ == "__main__":
    asyncio.run(main())
