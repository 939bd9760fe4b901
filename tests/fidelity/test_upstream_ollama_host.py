"""``OLLAMA_HOST`` reaches the pool classes as it reaches the upstream ones (issue #14, item 5).

``ChatOllama(model=...)`` and ``OllamaEmbeddings(model=...)`` find the server through the
``ollama`` client, which reads ``OLLAMA_HOST``; the pool classes built without ``base_url``,
``instances`` or ``config`` read it too, through the core's environment source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_ollama import ChatOllama, OllamaEmbeddings
from llama_index.core.llms import ChatMessage

from gleitzeit_llm.config import ENV_VARIABLES
from gleitzeit_llm.testing import OllamaEmulator
from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool

Closing = Callable[[Any], Any]


@pytest.fixture
def ollama_host(ollama_emulator: OllamaEmulator, monkeypatch: pytest.MonkeyPatch) -> OllamaEmulator:
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # host:port without a scheme, as containers usually set it
    monkeypatch.setenv("OLLAMA_HOST", ollama_emulator.url.split("://", 1)[1])
    return ollama_emulator


def test_chat_models_find_the_server_through_ollama_host(
    ollama_host: OllamaEmulator, closing: Closing
) -> None:
    closing(ChatOllama(model="llama3.2")).invoke("hi")
    assert len(ollama_host.requests_for("/api/chat")) == 1
    pooled = ChatOllamaPool(model="llama3.2", health_checks=False)
    try:
        pooled.invoke("hi")
    finally:
        pooled.close()
    assert len(ollama_host.requests_for("/api/chat")) == 2


def test_embeddings_find_the_server_through_ollama_host(
    ollama_host: OllamaEmulator, closing: Closing
) -> None:
    closing(OllamaEmbeddings(model="nomic-embed-text")).embed_query("hi")
    assert len(ollama_host.requests_for("/api/embed")) == 1
    pooled = OllamaPoolEmbeddings(model="nomic-embed-text", health_checks=False)
    try:
        pooled.embed_query("hi")
    finally:
        pooled.close()
    assert len(ollama_host.requests_for("/api/embed")) == 2


def test_llama_index_pool_classes_read_ollama_host(ollama_host: OllamaEmulator) -> None:
    llm = OllamaPool(model="llama3.2")
    embedding = OllamaPoolEmbedding(model_name="nomic-embed-text")
    try:
        llm.chat([ChatMessage(role="user", content="hi")])
        embedding.get_query_embedding("hi")
    finally:
        llm.close()
        embedding.close()
    assert len(ollama_host.requests_for("/api/chat")) == 1
    assert len(ollama_host.requests_for("/api/embed")) == 1
