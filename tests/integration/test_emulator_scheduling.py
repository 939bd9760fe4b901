"""The emulator's model of Ollama's scheduler: slots, queueing, loads, keep_alive, eviction, 503."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from gleitzeit_llm.testing import BUSY_MESSAGE, EmulatedModel, OllamaEmulator

USER = [{"role": "user", "content": "why is the sky blue?"}]
FAST = 0.01


def chat(model: str = "llama3.2", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": USER, "stream": False, **extra}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, verify=False) as c:
        yield c


def parse_time(text: str) -> dt.datetime:
    """RFC 3339 with nanoseconds (Go) -> an aware datetime (Python 3.10 takes microseconds only)."""
    match = re.fullmatch(r"(.{19})(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, text
    base, fraction, zone = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    return dt.datetime.fromisoformat(f"{base}.{micro}{'+00:00' if zone == 'Z' else zone}")


def expires_at(client: httpx.Client, emu: OllamaEmulator) -> dict[str, dt.datetime]:
    models = client.get(f"{emu.url}/api/ps").json()["models"]
    return {m["name"]: parse_time(m["expires_at"]) for m in models}


async def test_num_parallel_limits_generation_and_the_wait_shows_in_total_duration() -> None:
    async with OllamaEmulator(models=["llama3.2"], loaded=["llama3.2"], time_scale=FAST) as emu:
        emu.set_faults(hang_after_chunks=1)  # hold each generation after its first line
        async with httpx.AsyncClient(base_url=emu.url, timeout=10) as client:
            calls = [asyncio.ensure_future(client.post("/api/chat", json=chat())) for _ in range(3)]
            await emu.wait_for_async(lambda: emu.in_flight("llama3.2") == 3)
            assert emu.generating("llama3.2") == 1  # one slot; the others wait for it
            emu.clear_faults()
            responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert emu.max_concurrency_seen("llama3.2") == 1
    gaps = []
    for response in responses:
        body = response.json()
        gaps.append(
            body["total_duration"]
            - body["load_duration"]
            - body["prompt_eval_duration"]
            - body["eval_duration"]
        )
    eval_duration = responses[0].json()["eval_duration"]
    # Two requests queued behind a whole generation: their gap is at least that generation.
    assert sorted(gaps)[1] >= eval_duration
    assert sorted(gaps)[0] < 10_000_000  # the first one did not wait
    queued = sorted(r.queue_duration or 0 for r in emu.requests_for("/api/chat"))
    assert queued[0] == 0 and queued[2] > queued[1] > 0


async def test_num_parallel_slots_serve_concurrently_and_can_change_at_run_time() -> None:
    async with OllamaEmulator(
        models=["llama3.2", "qwen3"], loaded=["llama3.2", "qwen3"], time_scale=FAST
    ) as emu:
        emu.configure(num_parallel=2)
        emu.set_faults(hang_after_chunks=1)
        async with httpx.AsyncClient(base_url=emu.url, timeout=10) as client:
            calls = [asyncio.ensure_future(client.post("/api/chat", json=chat(m))) for m in ["llama3.2"] * 3]
            calls.append(asyncio.ensure_future(client.post("/api/chat", json=chat("qwen3"))))
            await emu.wait_for_async(lambda: emu.generating() == 3 and emu.in_flight() == 4)
            assert (emu.generating("llama3.2"), emu.generating("qwen3")) == (2, 1)
            emu.clear_faults()
            assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
    assert emu.max_concurrency_seen() == 3
    assert emu.max_concurrency_seen("llama3.2") == emu.max_concurrency_seen("llama3.2:latest") == 2
    assert emu.max_concurrency_seen("qwen3") == 1
    seen = sorted(
        (r.concurrency, r.model_concurrency) for r in emu.requests_for("/api/chat", model="llama3.2")
    )
    assert seen[0][1] == 1 and seen[-1][1] == 2


def test_cold_load_shows_in_load_duration_and_warm_requests_are_milliseconds(client: httpx.Client) -> None:
    models = ["llama3.2", EmulatedModel("qwen3", load_time=7.0)]
    with OllamaEmulator(models=models, load_time=3.0, time_scale=FAST) as emu:
        cold = client.post(f"{emu.url}/api/chat", json=chat()).json()
        warm = client.post(f"{emu.url}/api/chat", json=chat()).json()
        other = client.post(f"{emu.url}/api/chat", json=chat("qwen3")).json()
        assert 3.0e9 <= cold["load_duration"] < 3.2e9
        assert warm["load_duration"] < 5_000_000
        assert 7.0e9 <= other["load_duration"] < 7.2e9
        assert [r.cold_load for r in emu.requests] == [True, False, True]
        assert emu.load_count("llama3.2") == 1 and emu.load_count() == 2


async def test_requests_arriving_during_a_load_wait_for_it_and_share_it() -> None:
    emu = OllamaEmulator(models=["llama3.2"], load_time=2.0, time_scale=FAST, num_parallel=4)
    async with emu, httpx.AsyncClient(base_url=emu.url, timeout=10) as client:
        bodies = [
            r.json() for r in await asyncio.gather(*(client.post("/api/chat", json=chat()) for _ in range(3)))
        ]
    assert emu.load_count("llama3.2") == 1
    assert all(r.cold_load for r in emu.requests)
    assert all(0 < b["load_duration"] <= 2.2e9 for b in bodies)


def test_keep_alive_expires_idle_models(client: httpx.Client) -> None:
    with OllamaEmulator(models=["llama3.2"], time_scale=FAST) as emu:
        client.post(f"{emu.url}/api/chat", json=chat(keep_alive="1s"))  # 10 ms real
        emu.wait_for(lambda: emu.loaded_models() == [])
        assert emu.unload_count("llama3.2") == 1
        client.post(f"{emu.url}/api/chat", json=chat(keep_alive=0))
        emu.wait_for(lambda: emu.loaded_models() == [])
        assert emu.load_count("llama3.2") == 2


def test_ps_reports_expiry_from_keep_alive_latest_first(client: httpx.Client) -> None:
    with OllamaEmulator(models=["llama3.2", "qwen3", "phi3"], time_scale=FAST) as emu:
        client.post(f"{emu.url}/api/chat", json=chat("llama3.2", keep_alive="10m"))
        client.post(f"{emu.url}/api/chat", json=chat("qwen3", keep_alive=-1))
        client.post(f"{emu.url}/api/generate", json={"model": "phi3", "keep_alive": 120})
        ps = client.get(f"{emu.url}/api/ps").json()["models"]
        assert [m["name"] for m in ps] == ["qwen3:latest", "llama3.2:latest", "phi3:latest"]
        assert list(ps[0]) == [
            "name",
            "model",
            "size",
            "digest",
            "details",
            "expires_at",
            "size_vram",
            "context_length",
        ]
        assert ps[0]["size_vram"] == ps[0]["size"]
        assert ps[1]["context_length"] == 4096
        when = expires_at(client, emu)
        now = dt.datetime.now(dt.timezone.utc)
        assert when["qwen3:latest"].year > 2200
        assert abs((when["llama3.2:latest"] - now).total_seconds() - 600) < 30
        assert abs((when["phi3:latest"] - now).total_seconds() - 120) < 30


def test_keep_alive_does_not_run_while_a_request_is_active(client: httpx.Client) -> None:
    with OllamaEmulator(models=["llama3.2"], time_scale=FAST) as emu:
        emu.set_faults(hang_after_chunks=1)
        body = {"model": "llama3.2", "messages": USER, "keep_alive": "1s"}  # 10 ms real
        with client.stream("POST", f"{emu.url}/api/chat", json=body) as response:
            lines = response.iter_lines()
            assert json.loads(next(lines))["done"] is False
            time.sleep(0.1)  # ten keep_alive periods: proving an absence needs some real time
            assert emu.loaded_models() == ["llama3.2:latest"]
            emu.clear_faults()
            assert json.loads(list(lines)[-1])["done"] is True
        emu.wait_for(lambda: emu.loaded_models() == [])


def test_lru_eviction_beyond_max_loaded_models(client: httpx.Client) -> None:
    with OllamaEmulator(models=["llama3.2", "qwen3", "phi3"], max_loaded_models=2, time_scale=FAST) as emu:
        for model in ["llama3.2", "qwen3", "llama3.2", "phi3"]:
            assert client.post(f"{emu.url}/api/chat", json=chat(model)).status_code == 200
        assert sorted(emu.loaded_models()) == ["llama3.2:latest", "phi3:latest"]  # qwen3 was least recent
        assert emu.unload_count("qwen3") == 1 and emu.unload_count() == 1


def test_a_load_waits_while_every_resident_model_is_busy(client: httpx.Client) -> None:
    with OllamaEmulator(models=["llama3.2", "qwen3"], max_loaded_models=1, time_scale=FAST) as emu:
        emu.set_faults(hang_after_chunks=1)
        result: list[httpx.Response] = []
        with client.stream(
            "POST", f"{emu.url}/api/chat", json={"model": "llama3.2", "messages": USER}
        ) as busy:
            lines = busy.iter_lines()  # keep the iterator: dropping it would close the connection
            next(lines)
            waiter = threading.Thread(
                target=lambda: result.append(httpx.post(f"{emu.url}/api/chat", json=chat("qwen3")))
            )
            waiter.start()
            emu.wait_for(lambda: any(r.model == "qwen3" and r.cold_load for r in emu.requests))
            assert emu.loaded_models() == ["llama3.2:latest"] and not result
            emu.clear_faults()
            assert json.loads(list(lines)[-1])["done"] is True
            waiter.join(10)
        assert result[0].status_code == 200
        assert emu.loaded_models() == ["qwen3:latest"]
        assert emu.unload_count("llama3.2") == 1


async def test_503_only_when_more_than_max_queue_requests_wait_for_a_load() -> None:
    models = ["llama3.2", "qwen3", "phi3"]
    async with (
        OllamaEmulator(
            models=models, loaded=["llama3.2"], max_queue=1, load_time=1000, time_scale=FAST
        ) as emu,
        httpx.AsyncClient(base_url=emu.url, timeout=30) as client,
    ):
        loading = asyncio.ensure_future(client.post("/api/chat", json=chat("qwen3")))
        await emu.wait_for_async(lambda: emu.scheduler.queued == 1)
        refused = await client.post("/api/chat", json=chat("phi3"))
        assert refused.status_code == 503
        assert refused.text == json.dumps({"error": BUSY_MESSAGE}, separators=(",", ":"))
        assert refused.text == '{"error":"server busy, please try again.  maximum pending requests exceeded"}'
        # A loaded model is not behind the load queue: no 503 for it.
        assert (await client.post("/api/chat", json=chat("llama3.2"))).status_code == 200
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)


def test_health_probes_never_load_a_model_nor_reset_keep_alive(client: httpx.Client) -> None:
    with OllamaEmulator(models=["llama3.2", "qwen3"], time_scale=FAST) as emu:
        client.post(f"{emu.url}/api/chat", json=chat(keep_alive="10m"))
        before = expires_at(client, emu)
        for _ in range(3):
            client.get(f"{emu.url}/")
            client.head(f"{emu.url}/")
            client.get(f"{emu.url}/api/version")
            client.get(f"{emu.url}/api/tags")
            client.get(f"{emu.url}/api/ps")
            client.post(f"{emu.url}/api/show", json={"model": "qwen3"})
        assert expires_at(client, emu) == before
        assert emu.loaded_models() == ["llama3.2:latest"]
        assert emu.load_count() == 1
        assert not any(r.cold_load for r in emu.requests if r.path != "/api/chat")


def test_a_client_disconnect_stops_generation_and_frees_the_slot(client: httpx.Client) -> None:
    with OllamaEmulator(models=["llama3.2"], time_scale=FAST) as emu:
        emu.set_faults(hang_after_chunks=1)
        with client.stream("POST", f"{emu.url}/api/chat", json={"model": "llama3.2", "messages": USER}) as r:
            lines = r.iter_lines()
            next(lines)
            assert emu.generating("llama3.2") == 1
        # Leaving the block closes the connection mid-stream.
        emu.wait_for(lambda: emu.generating() == 0 and emu.in_flight() == 0)
        (record,) = emu.requests
        emu.wait_for(lambda: record.finished)
        assert record.cancelled and record.chunks == 1
        emu.clear_faults()
        assert client.post(f"{emu.url}/api/chat", json=chat()).status_code == 200


def test_the_request_log_records_what_was_asked_and_what_happened(client: httpx.Client) -> None:
    with OllamaEmulator(models=["qwen3"], time_scale=FAST) as emu:
        body = {
            "model": "qwen3",
            "messages": USER,
            "stream": False,
            "think": "high",
            "format": "json",
            "keep_alive": "2m",
            "options": {"temperature": 0, "num_predict": 50},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        }
        client.post(f"{emu.url}/api/chat", json=body, headers={"x-test": "1"})
        client.get(f"{emu.url}/api/version")
        chat_record, probe = emu.requests
        assert (chat_record.method, chat_record.path, chat_record.status) == ("POST", "/api/chat", 200)
        assert (chat_record.model, chat_record.model_name) == ("qwen3", "qwen3:latest")
        assert chat_record.stream is False and chat_record.think == "high" and chat_record.format == "json"
        assert chat_record.keep_alive == "2m" and chat_record.tools is True
        assert chat_record.options == {"temperature": 0, "num_predict": 50}
        assert chat_record.body == body and chat_record.headers["x-test"] == "1"
        assert (chat_record.concurrency, chat_record.model_concurrency, chat_record.cold_load) == (1, 1, True)
        assert chat_record.done_reason == "stop" and chat_record.eval_count and chat_record.total_duration
        assert chat_record.finished and chat_record.wall_time is not None
        assert (probe.path, probe.model, probe.status) == ("/api/version", None, 200)
        assert emu.requests_for(path="/api/chat", model="qwen3:latest") == [chat_record]
        emu.clear_log()
        assert emu.requests == [] and emu.load_count() == 0 and emu.max_concurrency_seen() == 0


def test_durations_are_modelled_and_consistent(client: httpx.Client) -> None:
    with OllamaEmulator(
        models=["llama3.2"],
        loaded=["llama3.2"],
        ttft=0.5,
        prompt_tokens_per_second=100,
        tokens_per_second=10,
        time_scale=0.001,
    ) as emu:
        body = client.post(f"{emu.url}/api/chat", json=chat()).json()
    assert body["eval_duration"] == body["eval_count"] * 100_000_000
    expected_ttft = 0.5 + body["prompt_eval_count"] / 100
    assert abs(body["prompt_eval_duration"] - expected_ttft * 1e9) < 1e6
    assert (
        body["total_duration"] >= body["load_duration"] + body["prompt_eval_duration"] + body["eval_duration"]
    )


def test_load_and_unload_at_run_time(client: httpx.Client) -> None:
    emu = OllamaEmulator(models=["llama3.2", "qwen3"], time_scale=FAST)
    emu.load("qwen3")  # before start: resident from the start
    with emu:
        assert emu.loaded_models() == ["qwen3:latest"]
        emu.load("llama3.2", keep_alive=-1)
        assert sorted(emu.loaded_models()) == ["llama3.2:latest", "qwen3:latest"]
        assert emu.load_count() == 0  # pre-loading is not a cold load
        emu.unload("qwen3")
        assert emu.loaded_models() == ["llama3.2:latest"]
        emu.remove_model("llama3.2")
        assert emu.loaded_models() == []
        response = client.post(f"{emu.url}/api/chat", json=chat())
        assert response.status_code == 404
        emu.add_model(EmulatedModel("llama3.2", capabilities=["completion"]))
        assert client.post(f"{emu.url}/api/chat", json=chat()).status_code == 200
        with pytest.raises(ValueError):
            emu.load("nope")
