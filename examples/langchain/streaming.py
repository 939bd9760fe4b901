"""Streaming from the pool: tokens as they arrive, sync and async, and where the stream came from.

A stream fails over to another server until its first chunk arrives; after that, a broken
stream raises ``StreamInterruptedError`` (the caller has already seen output). Leaving a stream
early (``break``) frees the server's slot at once.

    .venv/bin/python examples/langchain/streaming.py
"""

from __future__ import annotations

import asyncio

from _common import MODEL, servers
from langchain_core.messages import AIMessageChunk

from langchain_gleitzeit import ChatOllamaPool


async def stream_async(llm: ChatOllamaPool) -> None:
    print("async: ", end="")
    async for chunk in llm.astream("Name the planets of the solar system."):
        print(chunk.content, end="", flush=True)
    print()


def main() -> None:
    with servers(3) as instances:
        llm = ChatOllamaPool(model=MODEL, instances=instances, num_predict=80)

        print("sync:  ", end="")
        full: AIMessageChunk | None = None
        for chunk in llm.stream("Write one sentence about the sea."):
            print(chunk.content, end="", flush=True)
            full = chunk if full is None else full + chunk
        print()
        assert full is not None
        pool = full.response_metadata["pool"]
        usage = full.usage_metadata or {}
        print(
            f"streamed {usage.get('output_tokens')} tokens from {pool['instance_id']} "
            f"(attempts={pool['attempts']}, first chunk after {pool['ttft']:.3f}s)"
        )

        asyncio.run(stream_async(llm))

        # Leaving early is fine: the slot is released when the generator closes.
        for i, _ in enumerate(llm.stream("Count from one to one hundred.")):
            if i == 3:
                break
        active = llm.provider.status()["active_requests"]
        print(f"left a stream after 4 chunks; requests still active in the pool: {active}")
        llm.close()


if __name__ == "__main__":
    main()
