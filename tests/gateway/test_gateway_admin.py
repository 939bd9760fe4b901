"""Model management through the gateway with ``--allow-admin``: fanned out to the instances."""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama


def _pool(start_gateway: Any, ollama_emulators: Any) -> tuple[Any, Any, Any]:
    a, b = ollama_emulators(2)
    server = start_gateway(
        [{"id": "a", "url": a.url, "tags": ["big"]}, {"id": "b", "url": b.url}], allow_admin=True
    )
    return server, a, b


def test_pull_goes_to_every_instance_with_progress_merged(start_gateway: Any, ollama_emulators: Any) -> None:
    server, a, b = _pool(start_gateway, ollama_emulators)
    with httpx.Client(base_url=server.url) as http:
        with http.stream("POST", "/api/pull", json={"model": "mistral"}) as answer:
            lines = [json.loads(line) for line in answer.iter_lines() if line]
        assert answer.status_code == 200 and lines[-1] == {"status": "success"}
        assert {line["gleitzeit_instance"] for line in lines[:-1]} == {"a", "b"}
        assert {line["status"] for line in lines if line["status"].startswith("success on")} == {
            "success on a",
            "success on b",
        }
        # The pool knows at once: the new model routes on the next request.
        chat = http.post("/api/chat", json={"model": "mistral", "messages": [], "stream": False})
        assert chat.status_code == 200, chat.text
        whole = http.post(
            "/api/pull", json={"model": "gemma3", "stream": False}, headers={"X-Gleitzeit-Tags": "big"}
        )
        assert whole.json() == {"status": "success", "gleitzeit_instances": ["a"]}
    assert {m.key for m in a.models} >= {"mistral:latest", "gemma3:latest"}
    assert "gemma3:latest" not in {m.key for m in b.models}


def test_delete_and_the_official_client(start_gateway: Any, ollama_emulators: Any, closing: Any) -> None:
    server, a, b = _pool(start_gateway, ollama_emulators)
    client = closing(ollama.Client(host=server.url))
    assert client.delete("qwen3").status == "success"
    assert "qwen3:latest" not in {m.key for m in a.models} | {m.key for m in b.models}
    try:
        client.delete("qwen3")
        raise AssertionError("a second delete must fail")
    except ollama.ResponseError as exc:
        assert exc.status_code == 404
    progress = list(client.pull("qwen3", stream=True))
    assert progress[-1].status == "success"
    assert client.copy("qwen3", "qwen3-copy").status == "success"
    assert "qwen3-copy:latest" in {m.key for m in a.models}
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/api/create", json={"model": "x", "from": "qwen3"}).status_code == 501
