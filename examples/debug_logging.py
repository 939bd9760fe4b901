"""Debug Logging: see the pool's routing decisions, health checks, breaker changes and failovers.

Every pool event is logged at DEBUG on the ``gleitzeit_llm`` logger (a breaker opening at
WARNING). The guide's logger name ``gleitzeit.orchestration`` is ``gleitzeit_llm`` here.

    .venv/bin/python examples/debug_logging.py

The log goes to stderr, as ``logging.basicConfig`` does by default.
"""

from __future__ import annotations

import asyncio
import logging

from _servers import MODEL, servers

from gleitzeit_llm import OllamaPoolProvider

# Enable debug logging
logging.basicConfig(level=logging.DEBUG, format="%(levelname)-7s %(name)s: %(message)s")
logging.getLogger("gleitzeit_llm").setLevel(logging.DEBUG)
# The HTTP libraries are chatty at DEBUG (every connection and header); keep them quiet.
for noisy in ("httpx", "httpcore", "asyncio"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

# Logs will show:
# - Instance selection decisions   (routing_decision)
# - Health check results           (health_state_changed)
# - Circuit breaker state changes  (breaker_state_changed)
# - Failover attempts              (failover)
# - How each attempt ended         (request_finished)


async def main() -> None:
    with servers(2) as instances:
        # Round robin starts with the first instance; make its next request fail (emulated only),
        # so the log shows a failover to the second one.
        if instances.emulated:
            instances.emulators["ollama-1"].set_faults(fail_next=1)

        async with OllamaPoolProvider(
            instances=instances, load_balancing={"retry_backoff_base": 0.01}
        ) as pool:
            for question in ("Why is the sky blue?", "What is a circuit breaker?"):
                reply = await pool.chat(
                    MODEL, [{"role": "user", "content": question}], load_balancing_strategy="round_robin"
                )
                where = f"{reply.pool.instance_id} after {reply.pool.attempts} attempt(s)"
                print(f"-> {where}: {reply.message.content}")


if __name__ == "__main__":
    asyncio.run(main())
