"""Quick Start: one OllamaPoolProvider over two Ollama servers, one chat call.

The guide's "Basic Configuration", with the real import path. Run it:

    .venv/bin/python examples/basic_provider.py

It starts two emulated Ollama servers on 127.0.0.1 (or uses yours: see examples/README.md).
"""

from __future__ import annotations

import asyncio

from _servers import MODEL, servers

from gleitzeit_llm import OllamaPoolProvider


async def main() -> None:
    # Two servers, described as in the guide: an id, a URL, the models it has, a concurrency limit.
    # (`servers` fills in the URLs of the emulated servers it started.)
    with servers(
        [
            {"id": "primary", "models": ["llama3.2", "codellama"], "max_concurrent": 5},
            {"id": "secondary", "models": ["llama3.2", "mistral"], "max_concurrent": 5},
        ]
    ) as instances:
        provider = OllamaPoolProvider(provider_id="ollama_pool", instances=instances)

        # initialize() starts the background health checks and probes every instance once.
        await provider.initialize()
        try:
            result = await provider.execute(
                method="llm/chat",
                params={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "Hello!"}],
                },
            )
        finally:
            await provider.close()  # or: async with OllamaPoolProvider(...) as provider:

    # `result` is Ollama's own /api/chat answer, as a dict...
    print(f"reply: {result['message']['content']}")
    # ...plus "pool": which instance served it, after how many attempts, with which model.
    pool = result["pool"]
    print(
        f"served by {pool['instance_id']} ({pool['instance_url']}), "
        f"attempts={pool['attempts']}, fallback_used={pool['fallback_used']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
