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


# (upstream class, pool class, a call, the path it posts to): each built with a model only
PAIRS = {
    "chat": (ChatOllama, ChatOllamaPool, lambda m: m.invoke("hi"), "/api/chat", "llama3.2"),
    "embeddings": (
        OllamaEmbeddings,
        OllamaPoolEmbeddings,
        lambda m: m.embed_query("hi"),
        "/api/embed",
        "nomic-embed-text",
    ),
}


@pytest.mark.parametrize("pair", PAIRS)
def test_langchain_classes_find_the_server_through_ollama_host(
    pair: str, ollama_host: OllamaEmulator, closing: Closing
) -> None:
    upstream, pooled, use, path, model = PAIRS[pair]
    use(closing(upstream(model=model)))
    assert len(ollama_host.requests_for(path)) == 1
    use(closing(pooled(model=model, health_checks=False)))
    assert len(ollama_host.requests_for(path)) == 2


def test_llama_index_pool_classes_read_ollama_host(ollama_host: OllamaEmulator, closing: Closing) -> None:
    closing(OllamaPool(model="llama3.2")).chat([ChatMessage(role="user", content="hi")])
    closing(OllamaPoolEmbedding(model_name="nomic-embed-text")).get_query_embedding("hi")
    assert len(ollama_host.requests_for("/api/chat")) == 1
    assert len(ollama_host.requests_for("/api/embed")) == 1
