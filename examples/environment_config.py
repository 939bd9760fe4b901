"""Environment variables: configure the pool with GLEITZEIT_OLLAMA_* instead of code or YAML.

The guide's variables::

    export GLEITZEIT_OLLAMA_INSTANCES="local:http://localhost:11434,gpu:http://gpu:11434"
    export GLEITZEIT_OLLAMA_STRATEGY="least_loaded"
    export GLEITZEIT_OLLAMA_HEALTH_CHECK_INTERVAL="30"
    export GLEITZEIT_OLLAMA_FAILOVER="true"

``PoolConfig.from_env()`` reads ``os.environ``; ``PoolConfig.from_env(mapping)`` reads a mapping,
handy for tests. The full list is in docs/configuration.md.

    .venv/bin/python examples/environment_config.py
"""

from __future__ import annotations

import asyncio
import logging
import os

from _servers import MODEL, servers

from gleitzeit_llm import GleitzeitClient, PoolConfig

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


async def main() -> None:
    with servers([{"id": "local"}, {"id": "gpu"}]) as instances:
        # id:url entries, separated by commas (the emulators' URLs stand in for the guide's hosts).
        entries = ",".join(f"{i['id']}:{i['url']}" if ":" not in i["id"] else i["url"] for i in instances)
        env = {
            "GLEITZEIT_OLLAMA_INSTANCES": entries,
            "GLEITZEIT_OLLAMA_STRATEGY": "least_loaded",
            "GLEITZEIT_OLLAMA_HEALTH_CHECK_INTERVAL": "30",
            "GLEITZEIT_OLLAMA_FAILOVER": "true",
        }
        for name, value in env.items():
            print(f"{name}={value}")

        config = PoolConfig.from_env(env)
        lb = config.load_balancing
        print(f"-> instances {[(i.id, i.url) for i in config.instances]}")
        print(f"-> strategy {lb.strategy.value}, failover {lb.failover}")
        print(f"-> health checks every {lb.health_check_interval:g}s")

        # A misspelt variable is not silently ignored: a warning names the nearest valid one.
        PoolConfig.from_env({**env, "GLEITZEIT_OLLAMA_STRATAGY": "round_robin"})

        # In a deployment the variables are exported, and the client needs no configuration at all:
        # GleitzeitClient() reads the environment (so does OllamaPoolProvider()).
        os.environ.update(env)
        async with GleitzeitClient() as client:
            reply = await client.chat("Where do my settings come from?", model=MODEL)
            print(f"GleitzeitClient() -> {reply.pool.instance_id}: {reply}")


if __name__ == "__main__":
    asyncio.run(main())
