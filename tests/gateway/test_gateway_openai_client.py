"""The official ``openai`` client, unchanged, against the gateway's ``/v1`` routes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from gateway_server import GatewayServer

Closing = Callable[[Any], Any]
USER = [{"role": "user", "content": "Why is the sky blue?"}]


def _client(gateway: GatewayServer, closing: Closing, key: str = "unused") -> Any:
    return closing(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0))


def test_chat_streamed_and_not_with_usage(gateway: GatewayServer, closing: Closing) -> None:
    client = _client(gateway, closing)
    for emulator in gateway.emulators:  # type: ignore[attr-defined]
        emulator.responder = lambda req: "Rayleigh scattering." if req.endpoint == "chat" else None
    reply = client.chat.completions.create(model="llama3.2", messages=USER)
    assert reply.choices[0].message.content == "Rayleigh scattering."
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens == 3
    raw = client.chat.completions.with_raw_response.create(model="llama3.2", messages=USER)
    assert raw.headers["x-gleitzeit-attempts"] == "1" and raw.headers["x-gleitzeit-instance"]

    stream = client.chat.completions.create(
        model="llama3.2", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Rayleigh scattering."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_tools_and_response_format(gateway: GatewayServer, closing: Closing) -> None:
    client = _client(gateway, closing)
    for emulator in gateway.emulators:  # type: ignore[attr-defined]
        emulator.script_tool_calls([{"name": "get_weather", "arguments": {"city": "Paris"}}], persistent=True)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    reply = client.chat.completions.create(model="llama3.2", messages=USER, tools=tools)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls"
    for emulator in gateway.emulators:  # type: ignore[attr-defined]
        emulator.clear_tool_calls()
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    shaped = client.chat.completions.create(
        model="llama3.2",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert "answer" in json.loads(shaped.choices[0].message.content)
    sent = [r for e in gateway.emulators for r in e.requests_for("/api/chat")]  # type: ignore[attr-defined]
    assert [r.body["format"] for r in sent if "format" in r.body] == [schema]


def test_completions_embeddings_and_models(gateway: GatewayServer, closing: Closing) -> None:
    client = _client(gateway, closing)
    done = client.completions.create(model="llama3.2", prompt="Say something", max_tokens=4)
    assert done.choices[0].finish_reason == "length" and len(done.choices[0].text.split()) == 4
    with client.completions.create(model="llama3.2", prompt="Say something", stream=True) as stream:
        pieces = list(stream)
    assert pieces[-1].choices[0].finish_reason == "stop"
    vectors = client.embeddings.create(
        model="nomic-embed-text", input=["a cat", "a dog"]
    )  # base64 on the wire
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 768
    floats = client.embeddings.create(model="nomic-embed-text", input="x", encoding_format="float")
    assert len(floats.data[0].embedding) == 768
    assert [m.id for m in client.models.list()] == [
        "llama3.2:latest",
        "qwen3:latest",
        "nomic-embed-text:latest",
    ]


async def test_async_client_streams(gateway: GatewayServer) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=USER, stream=True)
        chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_errors_in_openais_shape(start_gateway: Any, two: Any, closing: Closing) -> None:
    server = start_gateway([e.url for e in two], api_keys=("sk-gw",))
    client = _client(server, closing, key="sk-gw")
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="missing", messages=USER)
    assert "not found" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="llama3.2", messages=USER, n=2)
    assert bad.value.body["param"] == "n"
    with pytest.raises(openai.AuthenticationError):
        _client(server, closing, key="wrong").models.list()
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer sk-gw"}) as http:
        answer = http.post(
            "/v1/chat/completions",
            json={"model": "llama3.2", "messages": USER},
            headers={"X-Gleitzeit-Strategy": "nope"},
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "X-Gleitzeit-Strategy"
        assert answer.json()["error"]["type"] == "invalid_request_error"


def test_a_failure_after_the_first_chunk_is_an_sse_error_event(
    start_gateway: Any, ollama_emulators: Any
) -> None:
    (flaky,) = ollama_emulators(
        1, faults={"error_after_chunks": 3, "stream_error_message": "GPU fell off the bus"}
    )
    server = start_gateway([flaky.url])
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    try:
        with pytest.raises(openai.APIError) as broken:
            list(client.chat.completions.create(model="llama3.2", messages=USER, stream=True))
        assert "GPU fell off the bus" in str(broken.value)
    finally:
        client.close()
