"""OllamaPoolEmbeddings: batches in parallel over the pool, order preserved, errors raised."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from lc_support import LOOPBACK

from gleitzeit_llm import GleitzeitError
from gleitzeit_llm.testing import OllamaEmulator
from langchain_gleitzeit import OllamaPoolEmbeddings

pytestmark = LOOPBACK

TEXTS = [f"document number {i} about {'cats' if i % 2 else 'tax law'}" for i in range(10)]


def embed_requests(emulators: list[OllamaEmulator]) -> list[list[str]]:
    return [r.body["input"] for e in emulators for r in e.requests_for("/api/embed")]


def test_batches_spread_over_the_pool_in_order(emulated_pool: Any) -> None:
    provider, emulators = emulated_pool(3, health_checks=False, load_balancing={"strategy": "round_robin"})
    embeddings = OllamaPoolEmbeddings(model="nomic-embed-text", pool=provider, batch_size=3)
    vectors = embeddings.embed_documents(TEXTS)
    assert len(vectors) == 10 and {len(v) for v in vectors} == {768}
    batches = embed_requests(emulators)
    assert sorted(map(tuple, batches)) == sorted(
        [tuple(TEXTS[0:3]), tuple(TEXTS[3:6]), tuple(TEXTS[6:9]), tuple(TEXTS[9:])]
    )
    assert all(e.requests_for("/api/embed") for e in emulators)  # round robin: every instance took a batch
    # Order: each vector is the one its own text gets alone.
    assert vectors[7] == pytest.approx(embeddings.embed_query(TEXTS[7]))
    assert vectors[0] == pytest.approx(embeddings.embed_query(TEXTS[0]))


def test_sync_batches_run_in_parallel(emulated_pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _ = emulated_pool(3, health_checks=False)
    embeddings = OllamaPoolEmbeddings(
        model="nomic-embed-text", pool=provider, batch_size=2, max_concurrency=3
    )
    barrier = threading.Barrier(3, timeout=10)  # breaks unless the 3 batches are in flight at once
    real = provider.embed_sync

    def embed_sync(*args: Any, **kwargs: Any) -> Any:
        barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(provider, "embed_sync", embed_sync)
    assert len(embeddings.embed_documents(TEXTS[:6])) == 6
    assert not barrier.broken


async def test_async_batches_run_in_parallel(emulated_pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _ = emulated_pool(3, health_checks=False)
    embeddings = OllamaPoolEmbeddings(model="nomic-embed-text", pool=provider, batch_size=2)
    in_flight = 0
    all_there = asyncio.Event()
    real = provider.embed

    async def embed(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight
        in_flight += 1
        if in_flight == 3:
            all_there.set()
        await asyncio.wait_for(all_there.wait(), 10)  # times out unless the 3 batches overlap
        return await real(*args, **kwargs)

    monkeypatch.setattr(provider, "embed", embed)
    vectors = await embeddings.aembed_documents(TEXTS[:6])
    assert len(vectors) == 6
    assert vectors[5] == pytest.approx(await embeddings.aembed_query(TEXTS[5]))
    assert await embeddings.aembed_documents([]) == []


def test_dimensions_hints_and_options_reach_the_request(emulated_pool: Any) -> None:
    provider, emulators = emulated_pool(3, tags=[["cpu"], ["gpu"], ["cpu"]], health_checks=False)
    embeddings = OllamaPoolEmbeddings(
        model="nomic-embed-text",
        pool=provider,
        dimensions=64,
        num_ctx=512,
        instance_tags=["gpu"],
        keep_alive="1m",
    )
    assert len(embeddings.embed_query("hello")) == 64
    (request,) = emulators[1].requests_for("/api/embed")
    assert request.body["dimensions"] == 64 and request.body["options"] == {"num_ctx": 512}
    assert "instance_tags" not in request.body
    assert not emulators[0].requests_for("/api/embed") and not emulators[2].requests_for("/api/embed")


def test_a_failing_batch_raises_and_stops_the_others(emulated_pool: Any) -> None:
    provider, _ = emulated_pool(2, health_checks=False)
    embeddings = OllamaPoolEmbeddings(model="no-such-embedder", pool=provider, batch_size=1)
    with pytest.raises(GleitzeitError):
        embeddings.embed_documents(TEXTS[:4])
    threads = [t for t in threading.enumerate() if t.name.startswith("gleitzeit-embed")]
    assert threads == []


def test_its_own_pool_from_urls(ollama_emulators: Any, closing: Callable[[Any], Any]) -> None:
    (emulator,) = ollama_emulators(1)
    embeddings = closing(OllamaPoolEmbeddings(model="nomic-embed-text", base_url=emulator.url))
    assert len(embeddings.embed_documents(["a", "b"])) == 2
    assert embeddings.embed_documents([]) == []
