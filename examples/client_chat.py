"""GleitzeitClient: chat with a pool of Ollama servers as if it were one.

The guide's "Python API Usage / Basic Usage". The client takes the pool configuration as a dict
(``ollama_config``), the same data as YAML or ``PoolConfig`` (see docs/configuration.md).

    .venv/bin/python examples/client_chat.py
"""

from __future__ import annotations

import asyncio

from _servers import MODEL, servers

from gleitzeit_llm import GleitzeitClient


async def main() -> None:
    with servers([{"id": "local"}, {"id": "remote"}]) as instances:
        async with GleitzeitClient(
            ollama_config={
                "instances": instances,  # e.g. [{"id": "local", "url": "http://localhost:11434"}, ...]
                "load_balancing": {
                    "strategy": "least_loaded",
                    "failover": True,
                },
            }
        ) as client:
            # Automatically uses load balancing (and fails over if an instance breaks).
            response = await client.chat("Explain quantum computing", model=MODEL)

            # The reply is a str...
            print(f"reply: {response}")
            # ...that also says where it came from (`.pool`) and carries Ollama's full answer.
            print(f"served by: {response.pool.instance_id} after {response.pool.attempts} attempt(s)")
            print(f"tokens generated: {response.response.eval_count}")

            # A system prompt, and routing hints, are keyword arguments.
            short = await client.chat(
                "Explain quantum computing",
                model=MODEL,
                system="Answer in one sentence.",
                load_balancing_strategy="round_robin",
            )
            print(f"with a system prompt: {short} [{short.pool.instance_id}]")


if __name__ == "__main__":
    asyncio.run(main())
