"""Leaving a stream early: the slot and the connection are given back the moment a ``with``
block is left, and a stream nobody closed still releases (with a ResourceWarning) when collected."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def emu(ollama_emulators: Any) -> OllamaEmulator:
    # A long answer: the server is still generating when the caller leaves after one chunk.
    (one,) = ollama_emulators(
        1, models=["llama3.2"], loaded=["llama3.2"], reply_tokens=400, tokens_per_second=200.0
    )
    return one


def quiet(emu: OllamaEmulator) -> OllamaPoolProvider:
    return OllamaPoolProvider(instances=[{"id": "e", "url": emu.url}], health_checks=False)


def in_flight(pool: OllamaPoolProvider) -> int:
    return int(pool.status()["instances"]["e"]["active_requests"])


async def test_leaving_an_async_with_block_by_break_releases_at_once(emu: OllamaEmulator) -> None:
    async with quiet(emu) as pool:
        async with pool.stream_chat("llama3.2", MESSAGES) as stream:
            async for _ in stream:
                break
            assert in_flight(pool) == 1  # still inside the block: the stream is open
        assert in_flight(pool) == 0
        await emu.wait_for_async(lambda: emu.generating() == 0)  # the server stopped generating


async def test_an_exception_in_the_block_releases_and_propagates(emu: OllamaEmulator) -> None:
    async with quiet(emu) as pool:
        with pytest.raises(KeyError):
            async with pool.stream_chat("llama3.2", MESSAGES) as stream:
                async for _ in stream:
                    raise KeyError("the caller's own error")
        assert in_flight(pool) == 0
        await emu.wait_for_async(lambda: emu.generating() == 0)


async def test_returning_from_inside_the_block_releases(emu: OllamaEmulator) -> None:
    async with quiet(emu) as pool:

        async def first_chunk() -> str:
            async with pool.stream_chat("llama3.2", MESSAGES) as stream:
                async for chunk in stream:
                    return chunk.message.content
            return ""

        assert await first_chunk()
        assert in_flight(pool) == 0


def test_leaving_a_sync_with_block_releases_at_once(emu: OllamaEmulator) -> None:
    with quiet(emu) as pool:
        with pool.stream_chat_sync("llama3.2", MESSAGES) as stream:
            for _ in stream:
                break
            assert in_flight(pool) == 1
        assert in_flight(pool) == 0
        emu.wait_for(lambda: emu.generating() == 0)


def test_an_unclosed_sync_stream_warns_and_releases_when_collected(emu: OllamaEmulator) -> None:
    with quiet(emu) as pool:
        stream = pool.stream_chat_sync("llama3.2", MESSAGES)
        next(stream)
        assert in_flight(pool) == 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del stream
            gc.collect()
        assert any(issubclass(w.category, ResourceWarning) and "unclosed" in str(w.message) for w in caught)
        assert in_flight(pool) == 0


async def test_an_unclosed_async_stream_warns_and_releases_when_collected(emu: OllamaEmulator) -> None:
    async with quiet(emu) as pool:
        stream = pool.stream_chat("llama3.2", MESSAGES)
        async for _ in stream:
            break
        assert in_flight(pool) == 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del stream
            gc.collect()
        assert any(issubclass(w.category, ResourceWarning) and "unclosed" in str(w.message) for w in caught)
        # The event loop's async-generator finaliser closes it in a task of its own.
        for _ in range(100):
            if in_flight(pool) == 0:
                break
            await asyncio.sleep(0)
        assert in_flight(pool) == 0


async def test_a_stream_read_to_the_end_or_never_started_does_not_warn(emu: OllamaEmulator) -> None:
    async with quiet(emu) as pool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream = pool.stream_chat("llama3.2", MESSAGES)
            chunks = [c async for c in stream]
            never = pool.stream_chat("llama3.2", MESSAGES)
            del stream, never
            gc.collect()
        assert chunks[-1].done
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
        assert in_flight(pool) == 0
