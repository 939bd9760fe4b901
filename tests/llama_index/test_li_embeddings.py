"""``OllamaPoolEmbedding``: batches spread over the pool in parallel, order kept, failover."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gleitzeit_llm import AllInstancesFailedError
from gleitzeit_llm.testing import OllamaEmulator
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding

TEXTS = [f"document number {i} about topic {i % 3}" for i in range(24)]


def reference(emulator: OllamaEmulator, texts: list[str]) -> list[list[float]]:
    """What one server answers for all texts in one request (the emulator embeds deterministically)."""
    response = httpx.post(
        f"{emulator.url}/api/embed", json={"model": "nomic-embed-text", "input": texts}, timeout=60
    )
    return response.json()["embeddings"]  # type: ignore[no-any-return]


def embed_inputs(emulators: list[OllamaEmulator]) -> list[list[str]]:
    return [r.body["input"] for emu in emulators for r in emu.requests_for("/api/embed")]


def test_a_batch_is_split_over_the_pool_and_comes_back_in_order(
    pool: Callable[..., Any], make_embedding: Callable[..., OllamaPoolEmbedding]
) -> None:
    emulators, instances = pool(3)
    embedding = make_embedding(instances=instances)
    vectors = embedding.get_text_embedding_batch(TEXTS)
    parts = [emu.requests_for("/api/embed") for emu in emulators]
    assert [len(r.body["input"]) for p in parts for r in p] == [8, 8, 8]  # one part per instance
    assert sorted(text for batch in embed_inputs(emulators) for text in batch) == sorted(TEXTS)
    assert vectors == reference(emulators[0], TEXTS)


async def test_async_batches_too(
    pool: Callable[..., Any], make_embedding: Callable[..., OllamaPoolEmbedding]
) -> None:
    emulators, instances = pool(2)
    embedding = make_embedding(instances=instances, embed_batch_size=10, parallel_requests=4)
    vectors = await embedding.aget_text_embedding_batch(TEXTS)
    # LlamaIndex batches of 10, 10 and 4 texts, each cut into at most four parts
    assert sorted(len(b) for b in embed_inputs(emulators)) == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    assert vectors == await asyncio.to_thread(reference, emulators[0], TEXTS)
    query = await embedding.aget_query_embedding("what about topic 1?")
    assert query == (await asyncio.to_thread(reference, emulators[0], ["what about topic 1?"]))[0]


def test_instructions_and_request_fields(
    pool: Callable[..., Any], make_embedding: Callable[..., OllamaPoolEmbedding]
) -> None:
    emulators, instances = pool(1)
    embedding = make_embedding(
        instances=instances,
        query_instruction="search_query:",
        text_instruction="search_document:",
        keep_alive="1m",
        truncate=True,
        ollama_additional_kwargs={"num_ctx": 512},
    )
    embedding.get_query_embedding("rain")
    embedding.get_text_embedding("clouds")
    assert embedding.get_general_text_embedding("plain") == reference(emulators[0], ["plain"])[0]
    first, second, third = emulators[0].requests_for("/api/embed")[:3]
    assert first.body["input"] == ["search_query: rain"] and second.body["input"] == [
        "search_document: clouds"
    ]
    assert third.body["input"] == ["plain"]
    assert first.body["keep_alive"] == "1m" and first.body["truncate"] is True
    assert first.body["options"] == {"num_ctx": 512}


def test_hints_route_embeddings(
    pool: Callable[..., Any], make_embedding: Callable[..., OllamaPoolEmbedding]
) -> None:
    emulators, instances = pool(2, tags=[["cpu"], ["gpu"]])
    embedding = make_embedding(instances=instances, instance_tags=["gpu"])
    embedding.get_text_embedding_batch(TEXTS[:6])
    assert emulators[0].requests_for("/api/embed") == []
    assert len(emulators[1].requests_for("/api/embed")) == 2  # two parts, both on the gpu instance
    assert all("instance_tags" not in r.body for r in emulators[1].requests_for("/api/embed"))


def test_an_instance_stopped_mid_run(
    pool: Callable[..., Any], make_embedding: Callable[..., OllamaPoolEmbedding]
) -> None:
    emulators, instances = pool(3)
    embedding = make_embedding(instances=instances)
    expected = reference(emulators[0], TEXTS)
    assert embedding.get_text_embedding_batch(TEXTS) == expected
    emulators[2].stop()
    for _ in range(3):
        assert embedding.get_text_embedding_batch(TEXTS) == expected
    emulators[0].stop()
    emulators[1].stop()
    with pytest.raises(AllInstancesFailedError):
        embedding.get_text_embedding("nothing answers")


def test_one_source_of_instances(pool: Callable[..., Any]) -> None:
    _, instances = pool(1)
    with pytest.raises(ValueError, match="instances=, config=, pool= or base_url="):
        OllamaPoolEmbedding(
            model_name="nomic-embed-text", instances=instances, config={"instances": instances}
        )
