"""``langchain_ollama`` (ChatOllama, OllamaEmbeddings) works against the emulator unchanged."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from pydantic import BaseModel, Field

from gleitzeit_llm.testing import OllamaEmulator

Closing = Callable[[Any], Any]


class Address(BaseModel):
    city: str
    country: str = Field(description="ISO country name")


class Person(BaseModel):
    """Someone the text mentions."""

    name: str = Field(min_length=2)
    age: int = Field(ge=0, le=130)
    hobbies: list[str] = Field(min_length=1)
    address: Address
    nickname: str | None = None


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"sunny in {city}"


def test_invoke_and_stream(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    ollama_emulator.responder = lambda req: f"Echo: {req.prompt}"
    llm = closing(
        ChatOllama(model="llama3.2", base_url=ollama_emulator.url, validate_model_on_init=True, temperature=0)
    )
    message = llm.invoke("Hello there")
    assert isinstance(message, AIMessage) and message.content == "Echo: Hello there"
    # "Echo", ":", " Hello", " there": one token per streamed piece.
    assert message.usage_metadata and message.usage_metadata["output_tokens"] == 4
    assert message.response_metadata["model"] == "llama3.2"
    chunks = list(llm.stream("Hello there"))
    assert "".join(str(c.content) for c in chunks) == "Echo: Hello there" and len(chunks) > 2
    request = ollama_emulator.requests_for("/api/chat")[0]
    assert request.options and request.options["temperature"] == 0


def test_validate_model_on_init_uses_tags(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    assert closing(
        ChatOllama(model="llama3.2:latest", base_url=ollama_emulator.url, validate_model_on_init=True)
    )
    with warnings.catch_warnings():
        # The failed constructor drops its ollama client with a pooled connection (langchain's
        # leak, not ours): collect it here, where its ResourceWarning is expected.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(ValueError, match="not found"):
            ChatOllama(model="llama9", base_url=ollama_emulator.url, validate_model_on_init=True)
        gc.collect()
    assert [r.path for r in ollama_emulator.requests] == ["/api/tags", "/api/tags"]
    assert ollama_emulator.load_count() == 0


def test_structured_output_with_json_schema(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    llm = closing(ChatOllama(model="llama3.2", base_url=ollama_emulator.url))
    person = llm.with_structured_output(Person, method="json_schema").invoke("Tell me about Ada.")
    assert isinstance(person, Person)
    assert 0 <= person.age <= 130 and person.hobbies and person.address.city
    sent_format = ollama_emulator.requests[-1].format
    assert sent_format["properties"]["address"] == {"$ref": "#/$defs/Address"}


def test_bind_tools_returns_the_scripted_call(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    ollama_emulator.script_tool_calls([{"name": "get_weather", "arguments": {"city": "Tokyo"}}])
    llm = closing(ChatOllama(model="llama3.2", base_url=ollama_emulator.url)).bind_tools([get_weather])
    message = llm.invoke("What is the weather in Tokyo?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Tokyo"})]
    assert ollama_emulator.requests[-1].tools


def test_reasoning_separates_thinking(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    llm = closing(ChatOllama(model="qwen3", base_url=ollama_emulator.url, reasoning=True))
    message = llm.invoke("Think first.")
    assert message.additional_kwargs["reasoning_content"].startswith("Okay")
    assert message.content and ollama_emulator.requests[-1].think is True


async def test_async_invoke_and_embeddings(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    llm = closing(ChatOllama(model="llama3.2", base_url=ollama_emulator.url))
    assert (await llm.ainvoke("hi")).content
    embeddings = closing(OllamaEmbeddings(model="nomic-embed-text", base_url=ollama_emulator.url))
    query = embeddings.embed_query("the blue sky")
    documents = embeddings.embed_documents(["the blue sky", "tax law"])
    assert len(query) == 768 and documents[0] == pytest.approx(query)
    assert (await embeddings.aembed_query("the blue sky")) == pytest.approx(query)


def test_a_conversation_reuses_the_servers_prompt_cache(
    ollama_emulator: OllamaEmulator, closing: Closing
) -> None:
    llm = closing(ChatOllama(model="llama3.2", base_url=ollama_emulator.url))
    history: list[Any] = [("system", "Answer briefly. " * 20), ("human", "Why is the sky blue?")]
    first = llm.invoke(history)
    history += [first, ("human", "And at sunset?")]
    second = llm.invoke(history)
    assert second.usage_metadata and first.usage_metadata
    assert second.usage_metadata["input_tokens"] > first.usage_metadata["input_tokens"]
    assert second.response_metadata["prompt_eval_duration"] < first.response_metadata["prompt_eval_duration"]
    record = ollama_emulator.requests_for("/api/chat")[-1]
    assert record.cached_tokens == first.usage_metadata["total_tokens"]
