"""A timeout set on an adapter bounds the call as the upstream class's timeout does (issue #14, item 4).

Against one hung server, ``ChatOllama(client_kwargs={"timeout": t})`` and LlamaIndex's
``Ollama(request_timeout=t)`` send one request and fail after about ``t``. The pool classes built
on that one server do the same: a retry could only go back to the server that just hung, and the
framework's timeout is a budget for the whole call, not for each attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from langchain_ollama import ChatOllama
from llama_index.core.llms import ChatMessage
from llama_index.llms.ollama import Ollama

from gleitzeit_llm.testing import OllamaEmulator
from langchain_gleitzeit import ChatOllamaPool
from llama_index.llms.gleitzeit import OllamaPool

Closing = Callable[[Any], Any]
TIMEOUT = 0.5
BOUND = 3 * TIMEOUT  # near the timeout, far below four attempts and their backoff


def _chats(emulator: OllamaEmulator) -> int:
    return len(emulator.requests_for("/api/chat"))


def _fails_within_bound(call: Callable[[], Any]) -> float:
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - each class raises its own timeout error
        call()
    return time.monotonic() - started


@pytest.fixture
def hung(ollama_emulator: OllamaEmulator) -> Any:
    ollama_emulator.set_faults(hang=True)
    yield ollama_emulator
    ollama_emulator.clear_faults()


def test_chat_ollama_pool_on_one_hung_server_sends_one_request_like_chat_ollama(
    hung: OllamaEmulator, closing: Closing
) -> None:
    upstream = closing(ChatOllama(model="llama3.2", base_url=hung.url, client_kwargs={"timeout": TIMEOUT}))
    assert _fails_within_bound(lambda: upstream.invoke("hi")) < BOUND
    assert _chats(hung) == 1

    pooled = closing(
        ChatOllamaPool(model="llama3.2", base_url=hung.url, timeout=TIMEOUT, health_checks=False)
    )
    assert _fails_within_bound(lambda: pooled.invoke("hi")) < BOUND
    assert _chats(hung) == 2  # one more: the pool's single attempt


def test_ollama_pool_on_one_hung_server_sends_one_request_like_ollama(
    hung: OllamaEmulator, closing: Closing
) -> None:
    hello = [ChatMessage(role="user", content="hi")]
    upstream = closing(Ollama(model="llama3.2", base_url=hung.url, request_timeout=TIMEOUT))
    assert _fails_within_bound(lambda: upstream.chat(hello)) < BOUND
    assert _chats(hung) == 1

    pooled = closing(OllamaPool(model="llama3.2", base_url=hung.url, request_timeout=TIMEOUT))
    assert _fails_within_bound(lambda: pooled.chat(hello)) < BOUND
    assert _chats(hung) == 2


def test_an_explicit_max_retries_retries_on_the_one_server(
    ollama_emulator: OllamaEmulator, closing: Closing
) -> None:
    ollama_emulator.set_faults(fail_next=1)
    pooled = closing(
        ChatOllamaPool(model="llama3.2", base_url=ollama_emulator.url, max_retries=1, health_checks=False)
    )
    assert pooled.invoke("hi").response_metadata["pool"]["attempts"] == 2
