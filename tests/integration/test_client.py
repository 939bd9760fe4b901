"""GleitzeitClient, the guide's high-level face, against emulated servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gleitzeit_llm import GleitzeitClient, RequestError


def config(emulators: list[Any], **lb: Any) -> dict[str, Any]:
    return {
        "instances": [{"id": f"e{i}", "url": e.url, "max_concurrent": 4} for i, e in enumerate(emulators)],
        "load_balancing": {"strategy": "least_loaded", "failover": True, **lb},
    }


async def test_chat_returns_the_text_and_where_it_came_from(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    emulators[0].responder = emulators[1].responder = lambda request: "Quantum bits can be both."
    async with GleitzeitClient(ollama_config=config(emulators)) as client:
        reply = await client.chat("Explain quantum computing", model="llama3.2", system="Be brief.")
    assert reply == "Quantum bits can be both."
    assert reply.pool.instance_id in {"e0", "e1"}
    sent = next(r for e in emulators for r in e.requests_for("/api/chat"))
    assert [m["role"] for m in sent.body["messages"]] == ["system", "user"]


async def test_chat_takes_routing_hints(ollama_emulators: Any) -> None:
    cpu, gpu = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    cfg = config([cpu, gpu])
    cfg["instances"][1]["tags"] = ["gpu"]
    async with GleitzeitClient(ollama_config=cfg) as client:
        for _ in range(3):
            reply = await client.chat("hi", model="llama3.2", require_gpu=True)
            assert reply.pool.instance_id == "e1"
    assert cpu.requests_for("/api/chat") == []


async def test_batch_process_spreads_files_and_keeps_order(ollama_emulators: Any, tmp_path: Path) -> None:
    emulators = ollama_emulators(3, models=["llama3.2"], num_parallel=8, time_scale=0.01)
    for n in range(12):
        (tmp_path / f"doc{n:02}.txt").write_text(f"document number {n}")
    (tmp_path / "skip.md").write_text("not matched")
    async with GleitzeitClient(ollama_config=config(emulators)) as client:
        in_flight, peak = 0, 0

        def track(event: Any) -> None:
            nonlocal in_flight, peak
            if event.kind == "routing_decision":
                in_flight += 1
                peak = max(peak, in_flight)
            elif event.kind == "request_finished":
                in_flight -= 1

        client.provider.events.subscribe(track)
        results = await client.batch_process(
            directory=tmp_path,
            pattern="*.txt",
            method="llm/chat",
            prompt="Summarize this document",
            model="llama3.2",
            max_concurrent=5,
        )
    assert [Path(r["file"]).name for r in results] == [f"doc{n:02}.txt" for n in range(12)]
    assert all(r["error"] is None and r["response"] for r in results)
    assert len({r["pool"]["instance_id"] for r in results}) == 3  # spread over the pool
    sent = [r.body["messages"][0]["content"] for e in emulators for r in e.requests_for("/api/chat")]
    assert all(text.startswith("Summarize this document\n\ndocument number") for text in sent)
    assert peak == 5  # max_concurrent bounds the whole batch, across the pool


async def test_batch_process_reports_failures_per_file(ollama_emulators: Any, tmp_path: Path) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], time_scale=0)
    emu.set_faults(error_rate=1.0)
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    async with GleitzeitClient(ollama_config=config([emu], retry_attempts=0)) as client:
        results = await client.batch_process(directory=tmp_path, model="llama3.2", max_concurrent=2)
        with pytest.raises(RequestError, match="does not exist"):
            await client.batch_process(directory=tmp_path / "missing", model="llama3.2")
    assert [r["error"] is not None for r in results] == [True, True]
    assert "llama-server process has terminated" in results[0]["error"]


async def test_batch_process_embeds(ollama_emulators: Any, tmp_path: Path) -> None:
    (emu,) = ollama_emulators(1, models=["nomic-embed-text"], time_scale=0)
    (tmp_path / "a.txt").write_text("alpha")
    async with GleitzeitClient(ollama_config=config([emu])) as client:
        (result,) = await client.batch_process(
            directory=tmp_path, method="llm/embed", model="nomic-embed-text"
        )
    assert isinstance(result["response"], list) and len(result["response"]) > 10
