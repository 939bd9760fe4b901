"""Migration Guide: from one Ollama server to a pool with a backup.

Before: code that talks to one server (here a plain HTTP call, as any Ollama client makes; the
guide's ``OllamaProvider`` is not part of gleitzeit-llm). When that server is down, the call
fails. After: the same call through ``OllamaPoolProvider`` with a backup instance; when the
primary is down, the backup answers.

    .venv/bin/python examples/migration.py
"""

from __future__ import annotations

import asyncio

import httpx
from _servers import MODEL, servers

from gleitzeit_llm import OllamaPoolProvider

MESSAGES = [{"role": "user", "content": "Hello from the migration guide"}]


# Before (single instance)
async def before(ollama_url: str) -> str:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            f"{ollama_url}/api/chat", json={"model": MODEL, "messages": MESSAGES, "stream": False}
        )
        response.raise_for_status()
        return response.json()["message"]["content"]


async def main() -> None:
    # Lower priority number = preferred: the backup only gets traffic the primary cannot take.
    with servers([{"id": "primary", "priority": 1}, {"id": "backup", "priority": 2}]) as instances:
        primary_url = instances[0]["url"]
        print(f"before: {await before(primary_url)}")

        # After (multi-instance)
        provider = OllamaPoolProvider(
            provider_id="ollama_pool",
            instances=instances,  # [{"id": "primary", "url": ...}, {"id": "backup", "url": ...}]
            load_balancing={"strategy": "priority"},  # fill the most preferred tier first
        )
        async with provider:
            reply = await provider.chat(MODEL, MESSAGES)
            print(f"after:  {reply.message.content} [{reply.pool.instance_id}]")

            primary = instances.emulators.get("primary")
            if primary is None:
                return  # real servers: nothing is stopped
            primary.stop()
            print("\n!! the primary server is down")
            try:
                await before(primary_url)
            except httpx.HTTPError as exc:
                print(f"before: fails: {type(exc).__name__}")
            reply = await provider.chat(MODEL, MESSAGES)
            print(
                f"after:  {reply.message.content} [{reply.pool.instance_id}, attempts={reply.pool.attempts}]"
            )


if __name__ == "__main__":
    asyncio.run(main())
