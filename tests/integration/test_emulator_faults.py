"""Faults switchable at run time, and stop/restart on the same port."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from gleitzeit_llm.testing import BUSY_MESSAGE, OllamaEmulator
from gleitzeit_llm.testing.faults import DEFAULT_ERROR_MESSAGE, DEFAULT_STREAM_ERROR

USER = [{"role": "user", "content": "why is the sky blue?"}]
CHAT = {"model": "llama3.2", "messages": USER}


@pytest.fixture
def emu() -> Iterator[OllamaEmulator]:
    with OllamaEmulator(models=["llama3.2", "nomic-embed-text"], time_scale=0.001) as emulator:
        yield emulator


@pytest.fixture
def client(emu: OllamaEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10, verify=False) as c:
        yield c


def test_error_rate_is_reproducible_with_a_seed(client: httpx.Client, emu: OllamaEmulator) -> None:
    def statuses() -> list[int]:
        return [client.post("/api/chat", json={**CHAT, "stream": False}).status_code for _ in range(16)]

    emu.set_faults(error_rate=0.5)
    emu.seed(7)
    first = statuses()
    emu.seed(7)
    assert statuses() == first
    assert set(first) == {200, 500}
    failed = next(r for r in emu.requests if r.status == 500)
    assert (failed.fault, failed.error) == ("error", DEFAULT_ERROR_MESSAGE)
    response = client.post("/api/chat", json=CHAT)
    while response.status_code != 500:
        response = client.post("/api/chat", json=CHAT)
    assert response.json() == {"error": DEFAULT_ERROR_MESSAGE}
    assert response.headers["content-type"] == "application/json; charset=utf-8"


def test_fail_next_and_custom_errors_then_healthy(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.set_faults(
        fail_next=2, error_status=500, error_message="llama runner process has terminated: signal: killed"
    )
    bodies = [client.post("/api/embed", json={"model": "nomic-embed-text", "input": "x"}) for _ in range(3)]
    assert [b.status_code for b in bodies] == [500, 500, 200]
    assert bodies[0].json() == {"error": "llama runner process has terminated: signal: killed"}
    assert emu.loaded_models() == ["nomic-embed-text:latest"]  # only the successful one loaded it


def test_busy_storm_answers_503_with_ollamas_text(client: httpx.Client, emu: OllamaEmulator) -> None:
    with emu.fault(busy=True):
        response = client.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
        assert response.status_code == 503
        assert response.json() == {"error": BUSY_MESSAGE}
        assert client.get("/api/version").status_code == 200  # probes are unaffected by default
    assert client.post("/api/generate", json={"model": "llama3.2", "prompt": "x"}).status_code == 200


def test_hang_before_the_first_byte_until_cleared(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.set_faults(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/chat", json=CHAT, timeout=0.2)
    result: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: result.append(client.post("/api/chat", json=CHAT)))
    worker.start()
    emu.wait_for(lambda: sum(r.fault == "hang" for r in emu.requests) == 2)
    assert not result
    emu.clear_faults()
    worker.join(10)
    assert result[0].status_code == 200
    # The client that gave up was seen leaving.
    assert emu.requests[0].cancelled


def test_hang_can_include_health_probes(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.set_faults(hang=True, affect_probes=True)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/api/version", timeout=0.2)
    emu.set_faults(hang=False, error_rate=1.0)
    assert client.get("/api/tags").status_code == 500
    emu.clear_faults()
    assert client.get("/api/tags").status_code == 200


def test_connection_dropped_mid_stream_after_n_chunks(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.set_faults(drop_after_chunks=2)
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", "/api/chat", json=CHAT) as response:
        assert response.status_code == 200
        received.extend(response.iter_lines())
    assert len(received) == 2 and not json.loads(received[-1])["done"]
    with pytest.raises(httpx.RemoteProtocolError):  # non-streamed: no response at all
        client.post("/api/chat", json={**CHAT, "stream": False})
    assert [r.fault for r in emu.requests] == ["drop", "drop"]


def test_drop_happens_before_the_done_line_at_the_latest(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.set_faults(drop_after_chunks=10_000)
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", "/api/chat", json=CHAT) as response:
        received.extend(response.iter_lines())
    assert received and not any(json.loads(line)["done"] for line in received)


def test_error_line_mid_stream_keeps_status_200(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.set_faults(error_after_chunks=3)
    response = client.post("/api/chat", json=CHAT)
    assert response.status_code == 200
    parts = [json.loads(line) for line in response.text.splitlines()]
    assert len(parts) == 4
    assert parts[-1] == {"error": DEFAULT_STREAM_ERROR}
    assert not any(p.get("done") for p in parts)
    whole = client.post("/api/chat", json={**CHAT, "stream": False})
    assert (whole.status_code, whole.json()) == (500, {"error": DEFAULT_STREAM_ERROR})
    # Failing before the first line: a proper error status, as Ollama does.
    emu.set_faults(error_after_chunks=0)
    early = client.post("/api/chat", json=CHAT)
    assert (early.status_code, early.json()) == (500, {"error": DEFAULT_STREAM_ERROR})


def test_extra_latency_and_slow_factor_show_in_the_durations(
    client: httpx.Client, emu: OllamaEmulator
) -> None:
    body = {**CHAT, "stream": False}
    base = client.post("/api/chat", json=body).json()
    emu.set_faults(extra_latency=2.0)
    # The same prompt again would be cached (as on Ollama): compare cold prompts.
    emu.clear_prompt_caches()
    late = client.post("/api/chat", json=body).json()
    assert late["prompt_eval_duration"] - base["prompt_eval_duration"] == pytest.approx(2e9, rel=1e-3)
    emu.set_faults(extra_latency=0.0, slow_factor=3.0)
    emu.clear_prompt_caches()
    slow = client.post("/api/chat", json=body).json()
    assert slow["eval_duration"] == pytest.approx(3 * base["eval_duration"], rel=1e-3)
    assert slow["prompt_eval_duration"] == pytest.approx(3 * base["prompt_eval_duration"], rel=1e-3)


def test_stop_refuses_connections_and_start_listens_on_the_same_port(emu: OllamaEmulator) -> None:
    port = emu.port
    emu.set_faults(hang_after_chunks=1)
    with httpx.Client(base_url=emu.url, timeout=10, verify=False) as client:
        with client.stream("POST", "/api/chat", json=CHAT) as open_stream:
            lines = open_stream.iter_lines()
            next(lines)
            emu.stop()
            assert not emu.running
            with pytest.raises(httpx.TransportError):  # reset mid-stream
                list(lines)
        with pytest.raises(httpx.ConnectError):
            client.get("/")
        emu.clear_faults()
        emu.start()
        assert emu.port == port and emu.running
        assert client.get("/").text == "Ollama is running"
        assert client.get("/api/ps").json() == {"models": []}  # a restarted server starts cold
        emu.restart()
        assert client.post("/api/chat", json={**CHAT, "stream": False}).status_code == 200
    assert emu.requests[0].cancelled


def test_faults_are_validated() -> None:
    emu = OllamaEmulator()
    with pytest.raises(TypeError, match="unknown fault"):
        emu.set_faults(explode=True)
    with pytest.raises(TypeError, match="unknown setting"):
        emu.configure(warp=9)


def test_faults_can_be_given_to_the_constructor() -> None:
    with OllamaEmulator(models=["llama3.2"], faults={"error_rate": 1.0}, time_scale=0) as emu:
        response = httpx.post(
            f"{emu.url}/api/chat",
            json={"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], "stream": False},
        )
    assert response.status_code == 500
