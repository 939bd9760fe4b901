"""The errors a user of the upstream classes catches are raised by the pool classes too (issue #14, item 9).

Code written for ``ChatOllama``, ``OllamaEmbeddings`` and LlamaIndex's ``Ollama`` and
``OllamaEmbedding`` catches ``ollama.ResponseError`` and reads ``status_code`` (404: pull the
model). The same handler works for the pool classes, whose errors stay ``GleitzeitError`` too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import ollama
import pytest
from langchain_ollama import ChatOllama, OllamaEmbeddings
from llama_index.core.llms import ChatMessage
from llama_index.embeddings.ollama import OllamaEmbedding
from llama_index.llms.ollama import Ollama

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.errors import GleitzeitError
from gleitzeit_llm.testing import OllamaEmulator
from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool

Closing = Callable[[Any], Any]
MISSING = "no-such-model"
HELLO = [ChatMessage(role="user", content="hi")]


def status_of(call: Callable[[], Any]) -> int:
    """The handler upstream users write: catch ResponseError, read status_code."""
    try:
        call()
    except ollama.ResponseError as e:
        return e.status_code
    raise AssertionError("no ollama.ResponseError raised")


def pool_error(call: Callable[[], Any]) -> Any:
    with pytest.raises(ollama.ResponseError) as caught:
        call()
    assert isinstance(caught.value, GleitzeitError)  # still ours as well
    return caught.value


@pytest.fixture
def built(closing: Closing) -> Iterator[Callable[[Any], Any]]:
    """Registers a pool class built here; it is closed after the test."""
    made: list[Any] = []

    def register(obj: Any) -> Any:
        made.append(obj)
        return obj

    yield register
    for obj in made:
        obj.close()


def test_a_missing_model_is_a_404_response_error_for_the_chat_models(
    ollama_emulator: OllamaEmulator, closing: Closing, built: Callable[[Any], Any]
) -> None:
    url = ollama_emulator.url
    assert status_of(lambda: closing(ChatOllama(model=MISSING, base_url=url)).invoke("hi")) == 404
    pooled = built(ChatOllamaPool(model=MISSING, base_url=url, health_checks=False))
    assert status_of(lambda: pooled.invoke("hi")) == 404
    assert status_of(lambda: list(pooled.stream("hi"))) == 404
    assert status_of(lambda: asyncio.run(pooled.ainvoke("hi"))) == 404

    assert status_of(lambda: closing(Ollama(model=MISSING, base_url=url)).chat(HELLO)) == 404
    llm = built(OllamaPool(model=MISSING, base_url=url))
    assert status_of(lambda: llm.chat(HELLO)) == 404
    assert status_of(lambda: list(llm.stream_chat(HELLO))) == 404
    assert status_of(lambda: llm.complete("hi")) == 404


def test_a_missing_model_is_a_404_response_error_for_the_embeddings(
    ollama_emulator: OllamaEmulator, closing: Closing, built: Callable[[Any], Any]
) -> None:
    url = ollama_emulator.url
    assert status_of(lambda: closing(OllamaEmbeddings(model=MISSING, base_url=url)).embed_query("hi")) == 404
    pooled = built(OllamaPoolEmbeddings(model=MISSING, base_url=url, health_checks=False))
    assert status_of(lambda: pooled.embed_query("hi")) == 404
    assert status_of(lambda: asyncio.run(pooled.aembed_documents(["a", "b"]))) == 404

    upstream = closing(OllamaEmbedding(model_name=MISSING, base_url=url))
    assert status_of(lambda: upstream.get_query_embedding("hi")) == 404
    embedding = built(OllamaPoolEmbedding(model_name=MISSING, base_url=url))
    assert status_of(lambda: embedding.get_query_embedding("hi")) == 404
    assert status_of(lambda: asyncio.run(embedding.aget_text_embedding("hi"))) == 404


def test_a_model_missing_on_every_instance_of_a_pool_is_a_404(
    ollama_emulators: Callable[..., list[OllamaEmulator]], built: Callable[[Any], Any]
) -> None:
    emulators = ollama_emulators(2)
    with OllamaPoolProvider(instances=[e.url for e in emulators], health_checks=False) as provider:
        error = pool_error(lambda: ChatOllamaPool(model=MISSING, pool=provider).invoke("hi"))
        assert error.status_code == 404 and type(error).__name__ == "AllInstancesFailedError"
        # now the pool knows: no instance is even tried
        error = pool_error(lambda: ChatOllamaPool(model=MISSING, pool=provider).invoke("hi"))
        assert error.status_code == 404 and type(error).__name__ == "NoInstanceAvailableError"


def test_a_server_error_keeps_its_status(
    ollama_emulator: OllamaEmulator, closing: Closing, built: Callable[[Any], Any]
) -> None:
    ollama_emulator.set_faults(error_rate=1.0, error_status=500)
    url = ollama_emulator.url
    assert status_of(lambda: closing(ChatOllama(model="llama3.2", base_url=url)).invoke("hi")) == 500
    pooled = built(ChatOllamaPool(model="llama3.2", base_url=url, health_checks=False))
    error = pool_error(lambda: pooled.invoke("hi"))
    assert error.status_code == 500 and error.error  # the server's message, as upstream's .error
    ollama_emulator.clear_faults()


def test_an_unreachable_or_hung_server_gets_a_gateway_status(
    ollama_emulators: Callable[..., list[OllamaEmulator]], built: Callable[[Any], Any]
) -> None:
    down, hung = ollama_emulators(2)
    url = down.url
    down.stop()
    refused = pool_error(lambda: built(ChatOllamaPool(model="llama3.2", base_url=url)).invoke("hi"))
    assert refused.status_code == 502  # Bad Gateway: the server could not be reached
    hung.set_faults(hang=True)
    llm = built(OllamaPool(model="llama3.2", base_url=hung.url, request_timeout=0.3))
    assert pool_error(lambda: llm.chat(HELLO)).status_code == 504  # Gateway Timeout
    hung.clear_faults()
