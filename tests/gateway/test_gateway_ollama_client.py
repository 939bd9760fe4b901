"""The official ``ollama`` client, unchanged, against ``gleitzeit-llm serve`` over two emulators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import ollama
import pytest
from gateway_server import GatewayServer

USER = [{"role": "user", "content": "Why is the sky blue?"}]
Closing = Callable[[Any], Any]


def test_sync_client_chat_generate_embed_list_ps_show(gateway: GatewayServer, closing: Closing) -> None:
    client = closing(ollama.Client(host=gateway.url))
    for emulator in gateway.emulators:  # type: ignore[attr-defined]
        emulator.responder = lambda req: "Rayleigh scattering." if req.endpoint == "chat" else None
    reply = client.chat(model="llama3.2", messages=USER)
    assert reply.message.content == "Rayleigh scattering." and reply.done and reply.done_reason == "stop"
    assert reply.eval_count == 3 and reply.total_duration >= reply.eval_duration > 0
    pieces = [part.message.content for part in client.chat(model="llama3.2", messages=USER, stream=True)]
    assert "".join(pieces) == "Rayleigh scattering." and len(pieces) == 4  # three tokens, then done

    generated = client.generate(model="llama3.2", prompt="Say something", options={"num_predict": 4})
    assert generated.done_reason == "length" and len(generated.response.split()) == 4
    assert generated.context  # the final chunk's fields survive the relay
    streamed = list(client.generate(model="llama3.2", prompt="Say something", stream=True))
    assert streamed[-1].done and not streamed[0].done

    embedded = client.embed(model="nomic-embed-text", input=["a cat", "a dog"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 768
    legacy = client.embeddings(model="nomic-embed-text", prompt="a cat")
    assert len(legacy.embedding) == 768

    assert [m.model for m in client.list().models] == [
        "llama3.2:latest",
        "qwen3:latest",
        "nomic-embed-text:latest",
    ]
    running = [m.model for m in client.ps().models]
    assert "llama3.2:latest" in running and "nomic-embed-text:latest" in running
    shown = client.show("llama3.2")
    assert shown.details.family == "llama" and "completion" in shown.capabilities


async def test_async_client_chat_stream_and_embed(gateway: GatewayServer, closing: Closing) -> None:
    client = closing(ollama.AsyncClient(host=gateway.url))
    reply = await client.chat(model="llama3.2", messages=USER)
    assert reply.done and reply.message.content
    chunks = [c async for c in await client.chat(model="llama3.2", messages=USER, stream=True)]
    assert chunks[-1].done and "".join(c.message.content for c in chunks) == chunks_text(chunks)
    generated = [c async for c in await client.generate(model="qwen3", prompt="hi", stream=True, think=True)]
    assert any(c.thinking for c in generated) and generated[-1].done
    assert len((await client.embed(model="nomic-embed-text", input="x")).embeddings) == 1
    assert (await client.list()).models and (await client.ps()) is not None


def chunks_text(chunks: list[Any]) -> str:
    return "".join(c.message.content or "" for c in chunks)


def test_client_errors_keep_ollamas_shape(gateway: GatewayServer, closing: Closing) -> None:
    client = closing(ollama.Client(host=gateway.url))
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=USER)
    assert missing.value.status_code == 404 and "not found, try pulling it first" in missing.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        client.pull("llama3.2")
    assert refused.value.status_code == 403 and "--allow-admin" in refused.value.error


def test_every_answer_says_who_served_and_unknown_fields_pass_through(gateway: GatewayServer) -> None:
    body = {"model": "llama3.2", "messages": USER, "stream": False}
    with httpx.Client(base_url=gateway.url) as http:
        answer = http.post("/api/chat", json=body)
        ids = {inst.id for inst in gateway.provider.manager.instances}
        assert answer.status_code == 200 and answer.headers["x-gleitzeit-instance"] in ids
        assert answer.headers["x-gleitzeit-attempts"] == "1"
        # Ollama leaves empty fields out of a stream: false answer; so does the relay.
        assert "thinking" not in answer.json()["message"] and "logprobs" not in answer.json()
        assert set(answer.json()) >= {
            "model",
            "created_at",
            "message",
            "done",
            "eval_count",
            "total_duration",
        }
        with http.stream("POST", "/api/generate", json={"model": "llama3.2", "prompt": "hi"}) as streamed:
            assert streamed.headers["content-type"] == "application/x-ndjson"
            assert streamed.headers["x-gleitzeit-instance"] in ids
            lines = [line for line in streamed.iter_lines() if line]
        assert len(lines) > 2 and '"done":true' in lines[-1]
        for path in ("/api/tags", "/api/version", "/healthz"):
            assert http.get(path).headers["x-gleitzeit-attempts"] == "0"
        assert http.get("/").text == "Ollama is running" and http.head("/").status_code == 200


def test_tags_and_ps_say_where_each_model_lives(start_gateway: Any, ollama_emulators: Any) -> None:
    a, b = ollama_emulators(2)
    b.remove_model("qwen3")
    server = start_gateway([{"id": "a", "url": a.url}, {"id": "b", "url": b.url}])
    with httpx.Client(base_url=server.url) as http:
        where = {m["name"]: m["gleitzeit_instances"] for m in http.get("/api/tags").json()["models"]}
        assert where == {
            "llama3.2:latest": ["a", "b"],
            "qwen3:latest": ["a"],
            "nomic-embed-text:latest": ["a", "b"],
        }
        http.post("/api/generate", json={"model": "qwen3", "prompt": "", "stream": False})  # loads it on a
        assert {m["name"]: m["gleitzeit_instances"] for m in http.get("/api/ps").json()["models"]} == {
            "qwen3:latest": ["a"]
        }
        only_b = http.get("/api/tags", headers={"X-Gleitzeit-Tags": "nothing-has-this"}).json()
        assert only_b == {"models": []}


def test_hint_headers_route_and_never_reach_ollama(start_gateway: Any, ollama_emulators: Any) -> None:
    cpu, gpu = ollama_emulators(2)
    server = start_gateway([{"id": "cpu", "url": cpu.url}, {"id": "gpu", "url": gpu.url, "tags": ["gpu"]}])
    hints = {
        "X-Gleitzeit-Tags": "gpu",
        "X-Gleitzeit-Strategy": "round robin",
        "X-Gleitzeit-Max-Latency": "5000",
    }
    with httpx.Client(base_url=server.url) as http:
        for _ in range(3):
            answer = http.post("/api/chat", json={"model": "llama3.2", "messages": USER}, headers=hints)
            assert answer.status_code == 200 and answer.headers["x-gleitzeit-instance"] == "gpu"
        answer = http.post(
            "/api/chat",
            json={"model": "llama3.2", "messages": USER},
            headers={"X-Gleitzeit-Require-Gpu": "yes"},
        )
        assert answer.headers["x-gleitzeit-instance"] == "gpu"
    chats = gpu.requests_for("/api/chat")
    assert len(chats) == 4 and not cpu.requests_for("/api/chat")
    for record in chats:
        assert not any(name.lower().startswith("x-gleitzeit") for name in record.headers)
        assert record.headers.get("authorization") is None


def test_a_session_header_keeps_a_conversation_on_one_instance(
    start_gateway: Any, ollama_emulators: Any
) -> None:
    # #17: X-Gleitzeit-Session is the session_id hint; round robin would alternate without it.
    a, b = ollama_emulators(2)
    server = start_gateway(
        config={"instances": [a.url, b.url], "load_balancing": {"strategy": "round_robin"}}
    )
    with httpx.Client(base_url=server.url) as http:
        served = {
            session: {
                http.post(
                    "/api/chat",
                    json={"model": "llama3.2", "messages": USER},
                    headers={"X-Gleitzeit-Session": session},
                ).headers["x-gleitzeit-instance"]
                for _ in range(4)
            }
            for session in ("alice", "bob", "carol", "dave")
        }
        assert all(len(instances) == 1 for instances in served.values()), served
        unhinted = {
            http.post("/api/chat", json={"model": "llama3.2", "messages": USER}).headers[
                "x-gleitzeit-instance"
            ]
            for _ in range(4)
        }
        assert len(unhinted) == 2  # the strategy still rotates calls without a session
        blank = http.post(
            "/api/chat", json={"model": "llama3.2", "messages": USER}, headers={"X-Gleitzeit-Session": ""}
        )
        assert blank.status_code == 400 and "X-Gleitzeit-Session" in blank.json()["error"]
