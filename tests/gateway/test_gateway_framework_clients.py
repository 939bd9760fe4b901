"""LangChain's ``ChatOllama`` and LlamaIndex's ``Ollama``, unchanged, pointed at the gateway."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway_server import GatewayServer
from langchain_core.messages import AIMessage
from langchain_ollama import ChatOllama, OllamaEmbeddings
from llama_index.core.llms import ChatMessage
from llama_index.llms.ollama import Ollama

Closing = Callable[[Any], Any]


def test_langchain_chat_ollama_invoke_stream_and_embeddings(gateway: GatewayServer, closing: Closing) -> None:
    for emulator in gateway.emulators:  # type: ignore[attr-defined]
        emulator.responder = lambda req: f"Echo: {req.prompt}"
    llm = closing(
        ChatOllama(model="llama3.2", base_url=gateway.url, validate_model_on_init=True, temperature=0)
    )
    message = llm.invoke("Hello there")
    assert isinstance(message, AIMessage) and message.content == "Echo: Hello there"
    assert message.usage_metadata and message.usage_metadata["output_tokens"] == 4
    assert "".join(str(chunk.content) for chunk in llm.stream("Hello there")) == "Echo: Hello there"
    embeddings = closing(OllamaEmbeddings(model="nomic-embed-text", base_url=gateway.url))
    assert len(embeddings.embed_query("a cat")) == 768


async def test_langchain_chat_ollama_async(gateway: GatewayServer, closing: Closing) -> None:
    llm = closing(ChatOllama(model="llama3.2", base_url=gateway.url))
    message = await llm.ainvoke("Hello")
    assert message.content and message.response_metadata["done"] is True
    chunks = [chunk async for chunk in llm.astream("Hello")]
    assert "".join(str(c.content) for c in chunks) == message.content


def test_llama_index_ollama_chat_complete_and_stream(gateway: GatewayServer, closing: Closing) -> None:
    for emulator in gateway.emulators:  # type: ignore[attr-defined]
        emulator.responder = lambda req: "Hi from the pool."
    llm = closing(Ollama(model="llama3.2", base_url=gateway.url, request_timeout=30))
    assert llm.metadata.context_window == 131072  # read through /api/show
    reply = llm.chat([ChatMessage(role="user", content="Hello!")])
    assert reply.message.content == "Hi from the pool."
    assert llm.complete("Hello").text == "Hi from the pool."
    pieces = [chunk.delta for chunk in llm.stream_chat([ChatMessage(role="user", content="Hello!")])]
    assert "".join(p or "" for p in pieces) == "Hi from the pool."
