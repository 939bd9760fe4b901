"""LangChain's standard unit tests for ChatOllamaPool and OllamaPoolEmbeddings (no sockets at all)."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests
from lc_support import NO_SOCKETS

from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings

pytestmark = NO_SOCKETS

_ENV = {"GLEITZEIT_OLLAMA_INSTANCES": "gpu:127.0.0.1:11434, cpu:127.0.0.1:11435"}


class TestChatOllamaPoolUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatOllamaPool]:
        return ChatOllamaPool

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "llama3.2", "instances": ["http://127.0.0.1:11434", "http://127.0.0.1:11435"]}

    @property
    def model_override_value(self) -> str:
        return "qwen3"

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        # No instances given: the pool comes from GLEITZEIT_OLLAMA_INSTANCES.
        return _ENV, {"model": "llama3.2"}, {"model": "llama3.2"}


class TestOllamaPoolEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[OllamaPoolEmbeddings]:
        return OllamaPoolEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "nomic-embed-text", "instances": ["http://127.0.0.1:11434"]}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return _ENV, {"model": "nomic-embed-text"}, {"model": "nomic-embed-text"}
