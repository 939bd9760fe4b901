"""LangChain's standard integration tests for ChatOllamaPool and OllamaPoolEmbeddings.

They run against a pool of three emulated Ollama servers on 127.0.0.1. The few that need a model
which understands its prompt (choosing a tool from a sentence, filling its arguments, writing
JSON keys it was asked for, an agent loop) run against the real Ollama named by
``GLEITZEIT_TEST_OLLAMA_URL`` and are skipped, with that reason, without it; the same plumbing
is tested with the emulator's scripted tool calls in test_lc_chat_model.py.

Image tests download their picture with ``httpx.get``; here that download is answered with a
small PNG made locally, so no test leaves the machine.
"""

from __future__ import annotations

import struct
import types
import zlib
from collections.abc import Iterator
from typing import Any

import langchain_tests.integration_tests.chat_models as standard_chat_tests
import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests
from lc_support import FAST, LOOPBACK, REAL_OLLAMA_MODEL, REAL_OLLAMA_URLS

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator
from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings

pytestmark = LOOPBACK

_PROMPT_UNDERSTANDING = "needs a model that understands its prompt"
#: Standard tests that only a real model can pass, and why.
NEEDS_A_REAL_MODEL = {
    "test_tool_calling": f"{_PROMPT_UNDERSTANDING} (picks magic_function from a sentence)",
    "test_tool_calling_async": f"{_PROMPT_UNDERSTANDING} (picks magic_function from a sentence)",
    "test_tool_calling_with_no_arguments": f"{_PROMPT_UNDERSTANDING} (picks a tool from a sentence)",
    "test_bind_runnables_as_tools": f"{_PROMPT_UNDERSTANDING} (picks a tool and fills answer_style)",
    "test_unicode_tool_call_integration": f"{_PROMPT_UNDERSTANDING} (copies a Chinese name into arguments)",
    "test_agent_loop": f"{_PROMPT_UNDERSTANDING} (an agent loop: calls get_weather, then answers)",
    "test_json_mode": f"{_PROMPT_UNDERSTANDING} (writes the JSON keys the prompt asks for)",
}
_IMAGE_TESTS = {"test_image_inputs", "test_image_tool_message", "test_anthropic_inputs"}


def _png() -> bytes:
    """A valid 2x2 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _local_download(url: str, **_: Any) -> Any:
    if not url.endswith(".png"):
        raise AssertionError(f"a standard test wanted to download {url}; only images are served locally")
    return types.SimpleNamespace(content=_png(), status_code=200)


class _Pools:
    """Class-wide pools: three emulators, and the real Ollama when one is configured."""

    _emulated: OllamaPoolProvider
    _real: OllamaPoolProvider | None
    _use_real = False

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _servers(cls) -> Iterator[None]:
        emulators = [OllamaEmulator(time_scale=FAST).start() for _ in range(3)]
        instances = [{"id": f"ollama-{i}", "url": e.url} for i, e in enumerate(emulators, start=1)]
        cls._emulated = OllamaPoolProvider(instances=instances)
        cls._real = OllamaPoolProvider(instances=REAL_OLLAMA_URLS) if REAL_OLLAMA_URLS else None
        try:
            yield
        finally:
            cls._emulated.close_sync()
            if cls._real is not None:
                cls._real.close_sync()
            for emulator in emulators:
                emulator.close()

    @pytest.fixture(autouse=True)
    def _target(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        name = request.node.originalname
        reason = NEEDS_A_REAL_MODEL.get(name)
        self._use_real = reason is not None
        if reason is not None and self._real is None:
            pytest.skip(f"{reason}; set GLEITZEIT_TEST_OLLAMA_URL to a real Ollama to run it")
        if name in _IMAGE_TESTS:
            monkeypatch.setattr(standard_chat_tests, "httpx", types.SimpleNamespace(get=_local_download))


class TestChatOllamaPoolIntegration(_Pools, ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatOllamaPool]:
        return ChatOllamaPool

    @property
    def chat_model_params(self) -> dict[str, Any]:
        if self._use_real:
            return {"model": REAL_OLLAMA_MODEL, "pool": self._real, "temperature": 0}
        return {"model": "llama3.2", "pool": self._emulated}

    @property
    def model_override_value(self) -> str:
        return "qwen3"

    @property
    def has_tool_choice(self) -> bool:
        # Ollama cannot force a tool call; tool_choice only narrows the tools sent (as upstream ChatOllama).
        return False

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True


class TestOllamaPoolEmbeddingsIntegration(_Pools, EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[OllamaPoolEmbeddings]:
        return OllamaPoolEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "nomic-embed-text", "pool": self._emulated, "batch_size": 2}
