"""The errors a user of the upstream classes catches are raised by the pool classes too (issue #14, item 9).

Code written for ``ChatOllama``, ``OllamaEmbeddings`` and LlamaIndex's ``Ollama`` and
``OllamaEmbedding`` catches ``ollama.ResponseError`` and reads ``status_code`` (404: pull the
model). The same handler works for the pool classes, whose errors stay ``GleitzeitError`` too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
LC = {"model": MISSING, "health_checks": False}

# (upstream or pool class built on one server, what a user does with it), by name
CASES: dict[str, tuple[Callable[[str], Any], Callable[[Any], Any]]] = {
    "ChatOllama": (lambda url: ChatOllama(model=MISSING, base_url=url), lambda m: m.invoke("hi")),
    "ChatOllamaPool": (lambda url: ChatOllamaPool(base_url=url, **LC), lambda m: m.invoke("hi")),
    "ChatOllamaPool.stream": (lambda url: ChatOllamaPool(base_url=url, **LC), lambda m: list(m.stream("hi"))),
    "ChatOllamaPool.ainvoke": (
        lambda url: ChatOllamaPool(base_url=url, **LC),
        lambda m: asyncio.run(m.ainvoke("hi")),
    ),
    "Ollama": (lambda url: Ollama(model=MISSING, base_url=url), lambda m: m.chat(HELLO)),
    "OllamaPool": (lambda url: OllamaPool(model=MISSING, base_url=url), lambda m: m.chat(HELLO)),
    "OllamaPool.stream_chat": (
        lambda url: OllamaPool(model=MISSING, base_url=url),
        lambda m: list(m.stream_chat(HELLO)),
    ),
    "OllamaPool.complete": (lambda url: OllamaPool(model=MISSING, base_url=url), lambda m: m.complete("hi")),
    "OllamaEmbeddings": (
        lambda url: OllamaEmbeddings(model=MISSING, base_url=url),
        lambda m: m.embed_query("hi"),
    ),
    "OllamaPoolEmbeddings": (
        lambda url: OllamaPoolEmbeddings(base_url=url, **LC),
        lambda m: m.embed_query("hi"),
    ),
    "OllamaPoolEmbeddings.aembed_documents": (
        lambda url: OllamaPoolEmbeddings(base_url=url, **LC),
        lambda m: asyncio.run(m.aembed_documents(["a", "b"])),
    ),
    "OllamaEmbedding": (
        lambda url: OllamaEmbedding(model_name=MISSING, base_url=url),
        lambda m: m.get_query_embedding("hi"),
    ),
    "OllamaPoolEmbedding": (
        lambda url: OllamaPoolEmbedding(model_name=MISSING, base_url=url),
        lambda m: m.get_query_embedding("hi"),
    ),
    "OllamaPoolEmbedding.aget_text_embedding": (
        lambda url: OllamaPoolEmbedding(model_name=MISSING, base_url=url),
        lambda m: asyncio.run(m.aget_text_embedding("hi")),
    ),
}


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


@pytest.mark.parametrize("name", CASES)
def test_a_missing_model_is_a_404_response_error(
    name: str, ollama_emulator: OllamaEmulator, closing: Closing
) -> None:
    build, use = CASES[name]
    model = closing(build(ollama_emulator.url))
    assert status_of(lambda: use(model)) == 404


def test_a_model_missing_on_every_instance_of_a_pool_is_a_404(
    ollama_emulators: Callable[..., list[OllamaEmulator]],
) -> None:
    emulators = ollama_emulators(2)
    with OllamaPoolProvider(instances=[e.url for e in emulators], health_checks=False) as provider:
        error = pool_error(lambda: ChatOllamaPool(model=MISSING, pool=provider).invoke("hi"))
        assert error.status_code == 404 and type(error).__name__ == "AllInstancesFailedError"
        # now the pool knows: no instance is even tried
        error = pool_error(lambda: ChatOllamaPool(model=MISSING, pool=provider).invoke("hi"))
        assert error.status_code == 404 and type(error).__name__ == "NoInstanceAvailableError"


def test_a_server_error_keeps_its_status(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    ollama_emulator.set_faults(error_rate=1.0, error_status=500)
    url = ollama_emulator.url
    assert status_of(lambda: closing(ChatOllama(model="llama3.2", base_url=url)).invoke("hi")) == 500
    pooled = closing(ChatOllamaPool(model="llama3.2", base_url=url, health_checks=False))
    error = pool_error(lambda: pooled.invoke("hi"))
    assert error.status_code == 500 and error.error  # the server's message, as upstream's .error
    ollama_emulator.clear_faults()


def test_an_unreachable_or_hung_server_gets_a_gateway_status(
    ollama_emulators: Callable[..., list[OllamaEmulator]], closing: Closing
) -> None:
    down, hung = ollama_emulators(2)
    url = down.url
    down.stop()
    refused = pool_error(lambda: closing(ChatOllamaPool(model="llama3.2", base_url=url)).invoke("hi"))
    assert refused.status_code == 502  # Bad Gateway: the server could not be reached
    hung.set_faults(hang=True)
    llm = closing(OllamaPool(model="llama3.2", base_url=hung.url, request_timeout=0.3))
    assert pool_error(lambda: llm.chat(HELLO)).status_code == 504  # Gateway Timeout
    hung.clear_faults()
