"""The context window comes from ``/api/show`` as ``Ollama`` reads it (any ``model_info`` key with
``context_length``), also from Ollama-compatible servers that leave out ``general.architecture``."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.llms.ollama import Ollama

from gleitzeit_llm.testing import OllamaEmulator
from llama_index.llms.gleitzeit import OllamaPool

HELLO = [ChatMessage(role="user", content="Hello!")]


@pytest.mark.parametrize("show_architecture", [True, False])
async def test_context_window_and_num_ctx_as_ollama_has_them(
    ollama_emulator: OllamaEmulator, make_llm: Callable[..., OllamaPool], show_architecture: bool
) -> None:
    ollama_emulator.configure(show_architecture=show_architecture)
    async with httpx.AsyncClient() as client:
        shown = await client.post(f"{ollama_emulator.url}/api/show", json={"model": "llama3.2"})
    assert ("general.architecture" in shown.json()["model_info"]) is show_architecture
    upstream = Ollama(model="llama3.2", base_url=ollama_emulator.url, request_timeout=30.0)
    try:
        expected = upstream.get_context_window()
        assert upstream.metadata.context_window == expected == 131072
        upstream.chat(HELLO)
        await upstream.achat(HELLO)
    finally:  # Ollama never closes its clients
        upstream.client._client.close()
        await upstream.async_client._client.aclose()
    llm = make_llm(base_url=ollama_emulator.url)
    assert llm.get_context_window() == llm.metadata.context_window == expected
    llm.chat(HELLO)
    await llm.achat(HELLO)
    sent = [r.options.get("num_ctx") for r in ollama_emulator.requests_for("/api/chat")]
    assert sent == [expected] * 4


def test_get_context_window_is_the_field_when_set_and_the_default_without_an_answer(
    ollama_emulators: Callable[..., list[OllamaEmulator]], make_llm: Callable[..., OllamaPool]
) -> None:
    (emulator,) = ollama_emulators(1)
    assert make_llm(base_url=emulator.url, context_window=2048).get_context_window() == 2048
    assert emulator.requests_for("/api/show") == []
    emulator.stop()
    assert make_llm(base_url=emulator.url).get_context_window() == 3900  # LlamaIndex's default
