"""Streams through the gateway: relayed as they come, failover before the first chunk, an error
line after it, and a client that hangs up frees the slot and stops the generation."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
from gateway_server import wait_until

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


def _in_flight(server: Any) -> int:
    return sum(inst.in_flight for inst in server.provider.manager.instances)


def test_client_disconnect_mid_stream_frees_the_slot_and_stops_generating(
    start_gateway: Any, ollama_emulators: Any
) -> None:
    (slow,) = ollama_emulators(1, time_scale=1.0, tokens_per_second=50.0, reply_tokens=2000, load_time=0.0)
    server = start_gateway([slow.url])
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps(CHAT).encode()
    with socket.create_connection((host, int(port))) as sock:  # a client that just goes away
        sock.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        seen = b""
        while b'"content"' not in seen:
            seen += sock.recv(65536)
        assert _in_flight(server) == 1 and slow.generating() == 1
    assert wait_until(lambda: _in_flight(server) == 0, 10.0), "the slot was not given back"
    slow.wait_for(lambda: slow.generating() == 0 and slow.in_flight() == 0, timeout=10.0)
    record = slow.requests_for("/api/chat")[0]
    assert record.cancelled


def test_failover_before_the_first_chunk_is_invisible(start_gateway: Any, ollama_emulators: Any) -> None:
    broken, good = ollama_emulators(2)
    broken.set_faults(error_rate=1.0)
    server = start_gateway(
        config={
            "instances": [{"id": "broken", "url": broken.url}, {"id": "good", "url": good.url}],
            "load_balancing": {
                "strategy": "round_robin",
                "retry_backoff_base": 0.001,
                "retry_backoff_max": 0.001,
            },
        }
    )
    with httpx.Client(base_url=server.url) as http:
        attempts = set()
        for _ in range(4):
            with http.stream("POST", "/api/chat", json=CHAT) as answer:
                assert answer.status_code == 200 and answer.headers["x-gleitzeit-instance"] == "good"
                attempts.add(answer.headers["x-gleitzeit-attempts"])
                lines = [json.loads(line) for line in answer.iter_lines() if line]
            assert lines[-1]["done"] is True and not any("error" in line for line in lines)
    assert "2" in attempts  # some went to the broken one first


def test_a_failure_after_the_first_chunk_ends_the_stream_with_an_error_line(
    start_gateway: Any, ollama_emulators: Any
) -> None:
    (flaky,) = ollama_emulators(
        1, faults={"error_after_chunks": 3, "stream_error_message": "GPU fell off the bus"}
    )
    server = start_gateway([flaky.url])
    with httpx.Client(base_url=server.url) as http:
        with http.stream("POST", "/api/generate", json={"model": "llama3.2", "prompt": "hi"}) as answer:
            assert answer.status_code == 200
            lines = [json.loads(line) for line in answer.iter_lines() if line]
        assert len(lines) == 4 and "GPU fell off the bus" in lines[-1]["error"]
        assert not any(line.get("done") for line in lines)
        whole = http.post("/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False})
        assert whole.status_code == 502 and "GPU fell off the bus" in whole.json()["error"]
    assert _in_flight(server) == 0
