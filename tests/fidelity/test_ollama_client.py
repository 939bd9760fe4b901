"""The official ``ollama`` Python client works against the emulator unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ollama
import pytest

from gleitzeit_llm.testing import OllamaEmulator

Closing = Callable[[Any], Any]

USER = [{"role": "user", "content": "Why is the sky blue?"}]


def test_sync_client_chat_generate_embed_list_ps_show(
    ollama_emulator: OllamaEmulator, closing: Closing
) -> None:
    client = closing(ollama.Client(host=ollama_emulator.url))
    ollama_emulator.responder = lambda req: "Rayleigh scattering." if req.endpoint == "chat" else None
    reply = client.chat(model="llama3.2", messages=USER)
    assert reply.message.content == "Rayleigh scattering."
    assert reply.done and reply.done_reason == "stop"
    assert reply.model == "llama3.2" and reply.total_duration >= reply.eval_duration > 0
    pieces = [part.message.content for part in client.chat(model="llama3.2", messages=USER, stream=True)]
    assert "".join(pieces) == "Rayleigh scattering."
    assert reply.eval_count == len(pieces) - 1 == 3  # "Rayleigh", " scattering", "."; then the done line

    generated = client.generate(model="llama3.2", prompt="Say something", options={"num_predict": 4})
    assert generated.done_reason == "length" and len(generated.response.split()) == 4
    assert generated.context and len(generated.context) == generated.prompt_eval_count + generated.eval_count

    embedded = client.embed(model="nomic-embed-text", input=["a cat", "a dog"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 768

    names = [m.model for m in client.list().models]
    assert names == ["llama3.2:latest", "qwen3:latest", "nomic-embed-text:latest"]
    running = {m.model: m for m in client.ps().models}
    assert set(running) == {"llama3.2:latest", "nomic-embed-text:latest"}
    assert running["llama3.2:latest"].size_vram == running["llama3.2:latest"].size
    shown = client.show("qwen3")
    assert shown.modelinfo["general.architecture"] == "qwen3"
    assert "thinking" in shown.capabilities and shown.details.family == "qwen3"


def test_sync_client_thinking_and_tools(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    client = closing(ollama.Client(host=ollama_emulator.url))
    reply = client.chat(model="qwen3", messages=USER, think=True)
    assert reply.message.thinking and reply.message.content

    def get_weather(city: str) -> str:
        """Get the weather in a city.

        Args:
            city: the city
        """
        return "sunny"

    ollama_emulator.script_tool_calls([{"name": "get_weather", "arguments": {"city": "Tokyo"}}])
    reply = client.chat(model="llama3.2", messages=USER, tools=[get_weather])
    (call,) = reply.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Tokyo"}
    request = ollama_emulator.requests[-1]
    assert request.tools and request.body["tools"][0]["function"]["name"] == "get_weather"


def test_response_errors_on_404_and_mid_stream_error_line(
    ollama_emulator: OllamaEmulator, closing: Closing
) -> None:
    client = closing(ollama.Client(host=ollama_emulator.url))
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="llama9", messages=USER)
    assert (missing.value.status_code, missing.value.error) == (404, "model 'llama9' not found")
    with pytest.raises(ollama.ResponseError) as unsupported:
        client.chat(model="llama3.2", messages=USER, think=True)
    assert unsupported.value.status_code == 400 and "does not support thinking" in unsupported.value.error

    ollama_emulator.set_faults(error_after_chunks=2)
    received = []
    with pytest.raises(ollama.ResponseError) as broken:
        for part in client.chat(model="llama3.2", messages=USER, stream=True):
            received.append(part.message.content)
    assert len(received) == 2
    assert broken.value.error == "an error was encountered while running the model"
    assert broken.value.status_code == -1


async def test_async_client(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    client = closing(ollama.AsyncClient(host=ollama_emulator.url))
    reply = await client.chat(model="llama3.2", messages=USER)
    parts = [part async for part in await client.chat(model="llama3.2", messages=USER, stream=True)]
    assert "".join(p.message.content for p in parts) == reply.message.content
    assert parts[-1].done and parts[-1].eval_count == reply.eval_count
    generated = [p.response async for p in await client.generate(model="llama3.2", prompt="x", stream=True)]
    assert len(generated) > 3
    embedded = await client.embed(model="nomic-embed-text", input="hello")
    assert len(embedded.embeddings[0]) == 768
    assert (await client.list()).models[0].model == "llama3.2:latest"
    assert len((await client.ps()).models) == 2
    assert (await client.show("llama3.2")).modelinfo["llama.context_length"] == 131072
    with pytest.raises(ollama.ResponseError) as missing:
        await client.generate(model="llama9", prompt="x")
    assert missing.value.status_code == 404


def test_a_cached_second_turn_and_generate_context_parse(
    ollama_emulator: OllamaEmulator, closing: Closing
) -> None:
    client = closing(ollama.Client(host=ollama_emulator.url))
    messages: list[Any] = [{"role": "system", "content": "Answer briefly. " * 20}, *USER]
    first = client.chat(model="llama3.2", messages=messages)
    messages += [first.message, {"role": "user", "content": "And at sunset?"}]
    second = client.chat(model="llama3.2", messages=messages)
    # The whole prompt is counted, but only the new tokens took time (the runner's prompt cache).
    assert second.prompt_eval_count > first.prompt_eval_count
    assert second.prompt_eval_duration < first.prompt_eval_duration
    assert second.total_duration >= second.load_duration + second.prompt_eval_duration + second.eval_duration
    assert (
        ollama_emulator.requests_for("/api/chat")[-1].cached_tokens
        == first.prompt_eval_count + first.eval_count
    )

    generated = client.generate(model="llama3.2", prompt="Tell me a story")
    follow = client.generate(model="llama3.2", prompt="Go on", context=generated.context)
    assert follow.context and follow.context[: len(generated.context)] == generated.context
    assert ollama_emulator.requests_for("/api/generate")[-1].cached_tokens == len(generated.context)
