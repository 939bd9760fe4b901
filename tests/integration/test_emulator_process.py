"""The emulator in a child process, its command line, and the pytest fixtures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx
import pytest

from gleitzeit_llm.testing import EmulatedModel, EmulatorProcess, OllamaEmulator

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_emulator_process_kill_restart_and_control_api() -> None:
    models = ["llama3.2", EmulatedModel("tiny", capabilities=["completion"], embedding_dim=8)]
    # keep_alive=-1: at time_scale 0.001 the default 5 min are 0.3 real seconds, shorter than a
    # restart on a busy machine; the model must still be resident when the test looks.
    with EmulatorProcess(
        models=models, loaded=["llama3.2"], time_scale=0.001, keep_alive=-1, multiuser_cache=True
    ) as proc:
        url, pid = proc.url, proc.pid
        assert httpx.post(f"{url}/api/chat", json=CHAT).status_code == 200
        assert proc.state()["settings"]["multiuser_cache"] is True
        assert proc.prompt_caches("llama3.2")["llama3.2:latest"][0]["tokens"] > 0
        proc.clear_prompt_caches()
        assert [s["tokens"] for s in proc.prompt_caches()["llama3.2:latest"]] == [0]
        assert httpx.get(f"{url}/api/tags").json()["models"][1]["name"] == "tiny:latest"
        state = proc.state()
        assert state["loaded"] == ["llama3.2:latest"] and state["settings"]["time_scale"] == 0.001
        assert proc.set_faults(busy=True)["busy"] is True
        assert httpx.post(f"{url}/api/chat", json=CHAT).status_code == 503
        proc.clear_faults()
        log = proc.requests()
        assert [(r["path"], r["status"]) for r in log] == [
            ("/api/chat", 200),
            ("/api/tags", 200),
            ("/api/chat", 503),
        ]
        assert log[2]["fault"] == "busy"
        proc.script_tool_calls([{"name": "f", "arguments": {"x": 1}}])
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        reply = httpx.post(f"{url}/api/chat", json={**CHAT, "tools": tools}).json()
        assert reply["message"]["tool_calls"][0]["function"]["arguments"] == {"x": 1}
        proc.configure(num_parallel=2)
        assert proc.state()["settings"]["num_parallel"] == 2
        assert proc.unload() == []
        proc.reset()
        assert proc.requests() == []

        proc.kill()
        assert not proc.alive
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)
        proc.restart()
        assert proc.url == url and proc.pid != pid
        assert httpx.get(url).text == "Ollama is running"
        assert proc.state()["loaded"] == ["llama3.2:latest"]
    assert not proc.alive


def test_cli_prints_one_url_per_instance_and_stops_on_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "gleitzeit_llm.testing",
        "--instances",
        "2",
        "--models",
        "llama3.2,all-minilm",
    ]
    command += [
        "--time-scale",
        "0.001",
        "--num-parallel",
        "2",
        "--loaded",
        "all-minilm",
        "--keep-alive",
        "-1",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            urls = [child.stdout.readline().strip() for _ in range(2)]
            assert all(u.startswith("http://127.0.0.1:") for u in urls) and urls[0] != urls[1]
            for url in urls:
                assert [m["name"] for m in httpx.get(f"{url}/api/tags").json()["models"]] == [
                    "llama3.2:latest",
                    "all-minilm:latest",
                ]
                assert httpx.get(f"{url}/__emulator__/state").json()["settings"]["num_parallel"] == 2
            embed = httpx.post(f"{urls[0]}/api/embed", json={"model": "all-minilm", "input": "x"}).json()
            assert len(embed["embeddings"][0]) == 384 and embed["load_duration"] < 5_000_000
        finally:
            child.send_signal(signal.SIGTERM)
            assert child.wait(10) == 0


def test_cli_main_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from gleitzeit_llm.testing.cli import main

    assert main(["--instances", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--prompt-cache", "maybe"])
    assert "--prompt-cache: expected true or false, got 'maybe'" in capsys.readouterr().err
    assert main(["--models-json", json.dumps([{"name": "x", "capabilities": ["flying"]}])]) == 2
    assert "unknown capabilities" in capsys.readouterr().err


def test_ollama_emulator_fixture_is_started_and_fast(ollama_emulator: OllamaEmulator) -> None:
    assert ollama_emulator.running and ollama_emulator.settings.time_scale == 0.01
    assert httpx.get(f"{ollama_emulator.url}/api/version").status_code == 200


def test_ollama_emulators_factory_makes_independent_servers(ollama_emulators) -> None:  # type: ignore[no-untyped-def]
    first, second = ollama_emulators(2, models=["llama3.2"], num_parallel=2)
    assert first.url != second.url and second.settings.num_parallel == 2
    (third,) = ollama_emulators(models=["qwen3"])
    httpx.post(f"{first.url}/api/chat", json=CHAT)
    assert first.load_count() == 1 and second.load_count() == 0
    assert [m.name for m in third.models] == ["qwen3:latest"]


async def test_async_context_manager_does_not_block_the_callers_loop() -> None:
    emu = OllamaEmulator(models=["llama3.2"], time_scale=0.001)
    async with emu, httpx.AsyncClient(base_url=emu.url) as client:
        reply = (await client.post("/api/chat", json=CHAT)).json()
    assert reply["done"] is True and not emu.running
