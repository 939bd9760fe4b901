"""What the gateway answers when something is wrong: Ollama's error shape, a fitting status, and
never a credential."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_server import GatewayServer

from gleitzeit_llm.testing import OllamaEmulator

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_caller_mistakes_are_400_and_name_what_is_wrong(gateway: GatewayServer) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        bad_json = http.post(
            "/api/chat", content=b'{"model": "llama3.2",', headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 400 and "invalid JSON" in bad_json.json()["error"]
        assert http.post("/api/chat", json=["a list"]).status_code == 400
        no_model = http.post("/api/chat", json={"messages": []})
        assert no_model.status_code == 400 and no_model.json() == {"error": "model is required"}
        for header, value in [
            ("X-Gleitzeit-Max-Latency", "soon"),
            ("X-Gleitzeit-Max-Latency", "-5"),
            ("X-Gleitzeit-Strategy", "fastest-please"),
            ("X-Gleitzeit-Require-Gpu", "maybe"),
            ("X-Gleitzeit-Fallback-Model", ""),
        ]:
            answer = http.post("/api/chat", json=CHAT, headers={header: value})
            assert answer.status_code == 400, (header, value)
            assert answer.json()["error"].startswith(f"{header}: "), answer.json()
        upstream_400 = http.post("/api/generate", json={"model": "llama3.2", "prompt": 5})
        assert upstream_400.status_code == 400 and "cannot unmarshal" in upstream_400.json()["error"]
    for emulator in gateway.emulators:  # type: ignore[attr-defined]
        assert len(emulator.requests_for("/api/generate")) <= 1  # a 400 is never retried elsewhere


def test_a_model_no_instance_has_is_404(gateway: GatewayServer) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        for path, body in [
            ("/api/chat", {**CHAT, "model": "missing"}),
            ("/api/embed", {"model": "missing", "input": "x"}),
            ("/api/show", {"model": "missing"}),
        ]:
            answer = http.post(path, json=body)
            assert answer.status_code == 404, path
            assert answer.json() == {"error": 'model "missing" not found, try pulling it first'}


def test_saturated_pool_is_503_with_retry_after(start_gateway: Any, ollama_emulators: Any) -> None:
    (slow,) = ollama_emulators(1, time_scale=1.0, tokens_per_second=20.0, reply_tokens=400, load_time=0.0)
    server = start_gateway(
        config={
            "instances": [{"url": slow.url, "max_concurrent": 1}],
            "load_balancing": {"queue_timeout": 0.05},
        }
    )
    with httpx.Client(base_url=server.url) as holder, httpx.Client(base_url=server.url) as http:
        with holder.stream("POST", "/api/chat", json={**CHAT, "stream": True}) as held:
            lines = held.iter_lines()  # kept: a dropped line iterator closes the response
            next(lines)  # the slot is taken
            full = http.post("/api/chat", json=CHAT)
        assert full.status_code == 503 and full.headers["retry-after"] == "1"
        assert "error" in full.json()


def test_every_attempt_failing_is_502_and_timing_out_504(start_gateway: Any, ollama_emulators: Any) -> None:
    a, b = ollama_emulators(2, faults={"error_rate": 1.0})
    server = start_gateway(
        config={
            "instances": [a.url, b.url],
            "load_balancing": {"retry_attempts": 1, "retry_backoff_base": 0.001, "retry_backoff_max": 0.001},
        }
    )
    with httpx.Client(base_url=server.url) as http:
        failed = http.post("/api/chat", json=CHAT)
        assert failed.status_code == 502 and failed.json()["error"].startswith("all ")
        assert failed.headers["x-gleitzeit-attempts"] == "2"
    c, d = ollama_emulators(2, faults={"hang": True})
    server = start_gateway(
        config={
            "instances": [c.url, d.url],
            "timeouts": {"first_byte": 0.2},
            "load_balancing": {"retry_backoff_base": 0.001, "retry_backoff_max": 0.001},
        }
    )
    with httpx.Client(base_url=server.url) as http:
        timed_out = http.post("/api/chat", json=CHAT)
        assert timed_out.status_code == 504, timed_out.text


@pytest.fixture
def keyed(start_gateway: Any, two: list[OllamaEmulator]) -> Iterator[GatewayServer]:
    yield start_gateway([e.url for e in two], api_keys=("k-one", "k-two"))


def test_keys_guard_every_route_but_healthz(keyed: GatewayServer) -> None:
    with httpx.Client(base_url=keyed.url) as http:
        for method, path in [
            ("POST", "/api/chat"),
            ("GET", "/api/tags"),
            ("GET", "/metrics"),
            ("GET", "/status"),
            ("GET", "/"),
        ]:
            for auth in (None, "Bearer wrong", "Basic k-one", "Bearer k-one-and-more"):
                headers = {"Authorization": auth} if auth else {}
                answer = http.request(method, path, json=CHAT if method == "POST" else None, headers=headers)
                assert answer.status_code == 401, (path, auth)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert "k-one" not in answer.text and "k-two" not in answer.text
        assert http.get("/healthz").status_code == 200
        for key in ("k-one", "k-two"):
            assert (
                http.post("/api/chat", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code
                == 200
            )


def test_bodies_over_the_limit_are_413_also_when_chunked(
    start_gateway: Any, two: list[OllamaEmulator]
) -> None:
    server = start_gateway([e.url for e in two], max_body=1000)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
    with httpx.Client(base_url=server.url) as http:
        declared = http.post("/api/chat", json=big)
        assert declared.status_code == 413 and "1000 bytes" in declared.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
            yield b'{"model": "llama3.2", "prompt": "'
            for _ in range(20):
                yield b"y" * 100
            yield b'"}'

        chunked = http.post("/api/generate", content=chunks())
        assert chunked.status_code == 413
        assert http.post("/api/chat", json=CHAT).status_code == 200
    assert not any(e.requests_for("/api/generate") for e in two)


def test_no_answer_shows_an_instance_credential(start_gateway: Any, ollama_emulators: Any) -> None:
    (guarded,) = ollama_emulators(1, basic_auth=("alice", "s3cret-pw"))
    server = start_gateway([{"id": "guarded", "url": guarded.url.replace("//", "//alice:s3cret-pw@")}])
    seen: list[str] = []
    with httpx.Client(base_url=server.url) as http:
        seen.append(http.post("/api/chat", json=CHAT).text)
        seen += [http.get(p).text for p in ("/api/tags", "/api/ps", "/status", "/metrics", "/healthz")]
        guarded.set_faults(error_rate=1.0)
        failed = http.post("/api/chat", json=CHAT)
        assert failed.status_code == 502
        seen.append(failed.text)
        seen.append(str(failed.headers))
    assert guarded.requests_for("/api/chat")[0].headers.get("authorization", "").startswith("Basic ")
    assert "127.0.0.1" in seen[3]  # the status does show where instances are ...
    assert not [text for text in seen if "s3cret-pw" in text or "alice" in text]  # ... never who logs in


def test_admin_routes_are_refused_without_allow_admin(gateway: GatewayServer) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        for method, path in [
            ("POST", "/api/pull"),
            ("DELETE", "/api/delete"),
            ("POST", "/api/copy"),
            ("POST", "/api/create"),
            ("POST", "/api/push"),
        ]:
            answer = http.request(method, path, json={"model": "llama3.2", "source": "a", "destination": "b"})
            assert answer.status_code == 403 and "--allow-admin" in answer.json()["error"]
