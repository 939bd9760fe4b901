"""The gleitzeit-llm command, run as a subprocess the way a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

CLI = [sys.executable, "-m", "gleitzeit_llm.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_demo_runs_offline_and_reports_a_failover() -> None:
    env = {"GLEITZEIT_OLLAMA_INSTANCES": ""}
    result = run("demo", "--requests", "40", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Started three emulated Ollama servers on 127.0.0.1" in out
    assert "spot-box stopped" in out
    assert "requests: 40  succeeded: 40  failed: 0" in out
    assert "spot-box closed -> open" in out  # the breaker trip is visible


def test_emulate_prints_one_url_per_instance() -> None:
    proc = subprocess.Popen([*CLI, "emulate", "--instances", "2"], stdout=subprocess.PIPE, text=True)
    try:
        urls = [proc.stdout.readline().strip() for _ in range(2)]  # type: ignore[union-attr]
        assert all(u.startswith("http://127.0.0.1:") for u in urls)
        assert len(set(urls)) == 2
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]


def test_status_json_from_the_environment(ollama_emulators: Any) -> None:
    up, down = ollama_emulators(2, models=["llama3.2"])
    down.stop()
    env = {
        "GLEITZEIT_OLLAMA_INSTANCES": f"up:{up.url},down:{down.url}",
        "GLEITZEIT_OLLAMA_HEALTH_CHECK_TIMEOUT": "1",
    }
    result = run("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["instances"]["up"]["state"] == "healthy"
    assert status["instances"]["up"]["models_installed"] == ["llama3.2:latest"]
    assert status["instances"]["down"]["state"] == "unhealthy"


def test_a_bad_configuration_exits_2_with_the_field_named() -> None:
    result = run(
        "status",
        env={"GLEITZEIT_OLLAMA_INSTANCES": "a:http://127.0.0.1:1", "GLEITZEIT_OLLAMA_STRATEGY": "fastest"},
    )
    assert result.returncode == 2
    assert "GLEITZEIT_OLLAMA_STRATEGY" in result.stderr
    assert "least_loaded" in result.stderr
    assert "Traceback" not in result.stderr
