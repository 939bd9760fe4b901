"""The emulator's face, its Ollama routes and its control API share one EmulatorState."""

from __future__ import annotations

import httpx

from gleitzeit_llm.testing import OllamaEmulator

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_the_control_api_reports_and_changes_what_the_emulator_methods_see() -> None:
    with OllamaEmulator(models=["llama3.2", "qwen3"], time_scale=0) as emu, httpx.Client() as client:
        assert client.post(f"{emu.url}/api/chat", json=CHAT).status_code == 200
        state = client.get(f"{emu.url}/__emulator__/state").json()
        assert state["url"] == emu.url and state["running"] is True
        assert state["models"] == [m.name for m in emu.models] == ["llama3.2:latest", "qwen3:latest"]
        assert state["loaded"] == emu.loaded_models() == ["llama3.2:latest"]
        assert state["load_counts"] == {"llama3.2:latest": 1} and emu.load_count("llama3.2") == 1
        assert state["max_concurrency"] == emu.max_concurrency_seen() == 1

        client.post(f"{emu.url}/__emulator__/settings", json={"num_parallel": 3, "keep_alive": "1m"})
        assert emu.settings.num_parallel == 3 and emu.settings.keep_alive == 60
        client.post(f"{emu.url}/__emulator__/load", json={"model": "qwen3"})
        assert emu.loaded_models() == ["llama3.2:latest", "qwen3:latest"]
        client.post(f"{emu.url}/__emulator__/faults", json={"busy": True})
        assert emu.faults.current.busy and client.post(f"{emu.url}/api/chat", json=CHAT).status_code == 503

        client.post(f"{emu.url}/__emulator__/reset", json={"unload": True})
        assert emu.requests == [] and emu.load_count() == 0 and emu.loaded_models() == []
        assert not emu.faults.current.active
    assert emu.state.url is None and emu.loaded_models() == []
