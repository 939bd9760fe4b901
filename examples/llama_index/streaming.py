"""Streaming through the pool: stream_complete, a streaming query engine, and astream_chat.

Each stream is served by one instance (the pool fails over until the first chunk arrives);
``chunk.raw["pool"]`` says which one. Leaving a stream early frees its slot at once.

    .venv/bin/python examples/llama_index/streaming.py
"""

from __future__ import annotations

import asyncio

from _common import DATA, EMBED_MODEL, MODEL, servers
from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.llms import ChatMessage

from gleitzeit_llm import OllamaPoolProvider
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool


async def chat_stream(llm: OllamaPool) -> None:
    chunks = [c async for c in await llm.astream_chat([ChatMessage(role="user", content="Say hello.")])]
    print(f"astream_chat: {len(chunks)} chunks from {chunks[-1].raw['pool']['instance_id']}")


def main() -> None:
    with servers(2) as instances, OllamaPoolProvider(instances=instances) as pool:
        llm = OllamaPool(model=MODEL, pool=pool)

        print("stream_complete: ", end="", flush=True)
        last = None
        for last in llm.stream_complete("Why is the sky blue?"):
            print(last.delta, end="", flush=True)
        assert last is not None
        print(
            f"\n  served by {last.raw['pool']['instance_id']} after {last.raw['pool']['attempts']} attempt(s)"
        )

        index = VectorStoreIndex.from_documents(
            SimpleDirectoryReader(str(DATA)).load_data(),
            embed_model=OllamaPoolEmbedding(model_name=EMBED_MODEL, pool=pool),
        )
        streaming = index.as_query_engine(llm=llm, streaming=True)
        print("streaming query engine: ", end="", flush=True)
        tokens = 0
        for token in streaming.query("When are servers restarted?").response_gen:
            print(token, end="", flush=True)
            tokens += 1
        print(f"\n  {tokens} tokens")

        asyncio.run(chat_stream(llm))

        # Leaving early: the instance's slot is free again right away.
        stream = llm.stream_complete("Tell me a long story.")
        next(stream)
        stream.close()
        print(f"left a stream early; requests still in flight: {pool.status()['active_requests']}")


if __name__ == "__main__":
    main()
