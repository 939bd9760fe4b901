"""What an ``OllamaPool`` learns from ``/api/show`` on instances behind credentials and TLS, and
who closes a pool: an object closes the pool it built once it is closed or collected, never a
shared one."""

from __future__ import annotations

import asyncio
import gc
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool

HELLO = [ChatMessage(role="user", content="Hello!")]
LLAMA_CONTEXT = 131072  # what the emulator's /api/show reports for llama3.2


def secured(emulator: OllamaEmulator, pki: dict[str, str], how: str) -> dict[str, Any]:
    """The instance entry that reaches ``emulator`` as ``how`` demands."""
    if how == "credentials":
        return {"id": "e0", "url": emulator.url.replace("http://", "http://alice:s3cret@")}
    tls: dict[str, Any] = {"id": "e0", "url": emulator.url, "verify": pki["ca.pem"]}
    if how == "client certificate":
        tls.update(client_cert=pki["client.pem"], client_key=pki["client.key"])
    return tls


@pytest.fixture(params=["credentials", "private CA", "client certificate"])
def secured_instance(
    request: pytest.FixtureRequest,
    ollama_emulators: Callable[..., list[OllamaEmulator]],
    pki: dict[str, str],
    server_tls: Callable[..., ssl.SSLContext],
) -> tuple[OllamaEmulator, dict[str, Any]]:
    """An emulator that lets in only what the instance entry brings: ``user:pass@`` in the URL,
    a client that trusts the private CA, or one that also shows a client certificate."""
    how = request.param
    # Loaded already: a cold load would start a probe round that the test's end cuts short.
    if how == "credentials":
        (emulator,) = ollama_emulators(1, basic_auth=("alice", "s3cret"), loaded=["llama3.2"])
    else:
        context = server_tls(require_client_cert=how == "client certificate")
        (emulator,) = ollama_emulators(1, ssl_context=context, loaded=["llama3.2"])
    return emulator, secured(emulator, pki, how)


def test_the_context_window_comes_from_a_secured_instance(
    secured_instance: tuple[OllamaEmulator, dict[str, Any]], make_llm: Callable[..., OllamaPool]
) -> None:
    emulator, instance = secured_instance
    llm = make_llm(instances=[instance])
    assert llm.metadata.context_window == LLAMA_CONTEXT
    assert len(emulator.requests_for("/api/show")) == 1
    llm.chat(HELLO)
    assert emulator.requests_for("/api/chat")[-1].options["num_ctx"] == LLAMA_CONTEXT


def test_an_async_call_sends_the_secured_instances_context_window(
    secured_instance: tuple[OllamaEmulator, dict[str, Any]], make_llm: Callable[..., OllamaPool]
) -> None:
    emulator, instance = secured_instance
    llm = make_llm(instances=[instance])
    asyncio.run(llm.achat(HELLO))
    assert emulator.requests_for("/api/chat")[-1].options["num_ctx"] == LLAMA_CONTEXT


# -- ownership --------------------------------------------------------------------------------


@pytest.fixture
def new_health_thread() -> Iterator[Callable[[], threading.Thread]]:
    """``new_health_thread()`` -> the one health-check thread started since the fixture began."""
    before = set(threading.enumerate())

    def find() -> threading.Thread:
        (thread,) = [t for t in threading.enumerate() if t not in before and t.name == "gleitzeit-health"]
        return thread

    yield find


def llm(instances: list[dict[str, Any]]) -> OllamaPool:
    return OllamaPool(model="llama3.2", instances=instances)


def embedding(instances: list[dict[str, Any]]) -> OllamaPoolEmbedding:
    return OllamaPoolEmbedding(model_name="nomic-embed-text", instances=instances)


@pytest.mark.parametrize("make", [llm, embedding], ids=["OllamaPool", "OllamaPoolEmbedding"])
def test_a_dropped_object_closes_the_pool_it_built(
    make: Callable[[list[dict[str, Any]]], Any],
    pool: Callable[..., Any],
    new_health_thread: Callable[[], threading.Thread],
) -> None:
    _, instances = pool(1)
    dropped = make(instances)
    provider = dropped.provider
    provider.initialize_sync()
    thread = new_health_thread()
    del dropped
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the health thread of a pool nobody can reach still runs"
    assert provider.closed


def test_dropped_objects_leave_a_shared_pool_open(pool: Callable[..., Any]) -> None:
    _, instances = pool(1)
    with OllamaPoolProvider(instances=instances) as shared:
        llm = OllamaPool(model="llama3.2", pool=shared)
        embedding = OllamaPoolEmbedding(model_name="nomic-embed-text", pool=shared)
        llm.close()
        embedding.close()
        del llm, embedding
        gc.collect()
        assert not shared.closed
        assert shared.chat_sync("llama3.2", [{"role": "user", "content": "hi"}]).message.content
