"""The gleitzeit-llm command, run as a subprocess the way a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

CLI = [sys.executable, "-m", "gleitzeit_llm.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_demo_runs_offline_and_reports_a_failover() -> None:
    env = {"GLEITZEIT_OLLAMA_INSTANCES": ""}
    result = run("demo", "--requests", "30", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Started three emulated Ollama servers on 127.0.0.1" in out
    assert "LangChain chain (prompt | ChatOllamaPool | parser) and a LlamaIndex query engine" in out
    assert "spot-box stopped after" in out
    assert "calls: 30  succeeded: 30  failed: 0" in out
    assert "breaker spot-box: closed -> open" in out  # the breaker trip is visible
    assert "health  spot-box: degraded -> healthy" in out  # and the recovery
    assert "gleitzeit_pool_requests_total{" in out  # the Prometheus excerpt
    assert "gen_ai_client_operation_duration_seconds_count{" in out  # framework handlers feed it too


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


def pool_env(*emulators: Any, names: Sequence[str] = ("a", "b", "c")) -> dict[str, str]:
    entries = ",".join(f"{name}:{emu.url}" for name, emu in zip(names, emulators, strict=False))
    return {"GLEITZEIT_OLLAMA_INSTANCES": entries, "GLEITZEIT_OLLAMA_HEALTH_CHECK_TIMEOUT": "1"}


@pytest.mark.parametrize(
    "command", ["", "status", "chat", "batch", "run", "emulate", "metrics", "serve", "demo"]
)
def test_every_command_has_help(command: str) -> None:
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: gleitzeit-llm" in result.stdout


def test_status_table_shows_state_breaker_and_models(ollama_emulators: Any) -> None:
    # Resident for good: at the fixtures' time scale the default 5 min keep_alive is 3 real
    # seconds, less than a busy machine takes to start the command (1 run in 18 saw it expire).
    up, down = ollama_emulators(2, models=["llama3.2", "qwen3"], loaded=["qwen3"], keep_alive=-1)
    down.stop()
    result = run("status", env=pool_env(up, down))
    assert result.returncode == 0, result.stderr
    header, row_a, row_b, footer = result.stdout.splitlines()
    assert header.split()[:5] == ["INSTANCE", "STATE", "BREAKER", "IN-FLIGHT", "REQUESTS"]
    assert row_a.split()[:5] == ["a", "healthy", "closed", "0/4", "0"]
    assert row_a.split()[-2:] == ["qwen3*", "llama3.2"]  # loaded first, marked
    assert row_b.split()[:3] == ["b", "unhealthy", "closed"]
    assert footer.startswith("1/2 healthy")


def test_status_exits_1_when_no_instance_is_healthy(ollama_emulators: Any) -> None:
    (down,) = ollama_emulators(1)
    down.stop()
    result = run("status", env=pool_env(down))
    assert result.returncode == 1
    assert "0/1 healthy" in result.stdout


def test_status_watch_refreshes_a_bounded_number_of_times(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1)
    result = run("status", "--watch", "--interval", "0.05", "--count", "3", env=pool_env(emu))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("INSTANCE  STATE") == 3
    assert "\x1b[" not in result.stdout  # no screen control codes when not on a terminal
    as_json = run("status", "--watch", "--json", "--interval", "0.05", "--count", "2", env=pool_env(emu))
    snapshots = [json.loads(line) for line in as_json.stdout.splitlines()]  # one JSON line per refresh
    assert [s["instances"]["a"]["state"] for s in snapshots] == ["healthy", "healthy"]


def test_status_usage_mistakes_exit_2(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1)
    for args in (["--interval", "0"], ["--count", "0"], ["--colour"]):
        result = run("status", *args, env=pool_env(emu))
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr


def test_chat_streams_the_answer_and_says_where_it_ran(ollama_emulators: Any, tmp_path: Path) -> None:
    cpu, gpu = ollama_emulators(2, models=["llama3.2"])
    gpu.responder = lambda request: "Hello from the GPU box."
    config = tmp_path / "pool.yaml"
    config.write_text(
        f"instances:\n  - {{id: cpu, url: '{cpu.url}'}}\n  - {{id: gpu, url: '{gpu.url}', tags: [gpu]}}\n"
    )
    result = run(
        "--config", str(config), "chat", "Say hello", "-m", "llama3.2", "--require-gpu",
        "-O", "temperature=0.2", "--system", "Be brief.",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from the GPU box.\n"
    assert result.stderr.startswith("[gpu, 1 attempt(s), ")
    body = gpu.requests_for("/api/chat")[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert body["options"] == {"temperature": 0.2}
    assert "require_gpu" not in body  # hints never reach Ollama
    assert cpu.requests_for("/api/chat") == []


def test_chat_reads_stdin_and_prints_json(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"])
    emu.responder = lambda request: "Piped."
    result = subprocess.run(
        [*CLI, "chat", "-m", "llama3.2", "--json"],
        input="from stdin",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **pool_env(emu)},
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["message"]["content"] == "Piped."
    assert answer["pool"]["instance_id"] == "a" and "instance_url" not in answer["pool"]
    assert emu.requests_for("/api/chat")[-1].body["messages"][0]["content"] == "from stdin"


def test_chat_errors_exit_1_for_the_pool_and_2_for_the_caller(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"])
    no_gpu = run("chat", "hi", "-m", "llama3.2", "--tags", "gpu", env=pool_env(emu))
    assert no_gpu.returncode == 1
    assert "NoInstanceAvailableError" in no_gpu.stderr and "gpu" in no_gpu.stderr
    bad_hint = run("chat", "hi", "-m", "llama3.2", "--strategy", "fastest", env=pool_env(emu))
    assert bad_hint.returncode == 2
    assert "load_balancing_strategy" in bad_hint.stderr
    no_model = run("chat", "hi", env=pool_env(emu))
    assert no_model.returncode == 2 and "--model" in no_model.stderr
    for result in (no_gpu, bad_hint, no_model):
        assert "Traceback" not in result.stderr


def test_emulate_applies_faults_to_the_chosen_instance() -> None:
    proc = subprocess.Popen(
        [*CLI, "emulate", "--instances", "2", "--models", "llama3.2", "--time-scale", "0",
         "--fault", "2:error_rate=1", "--fault", "extra_latency=0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        urls = [proc.stdout.readline().strip() for _ in range(2)]  # type: ignore[union-attr]
        export = proc.stderr.readline().strip()  # type: ignore[union-attr]
        assert export == f"export GLEITZEIT_OLLAMA_INSTANCES=emu1:{urls[0]},emu2:{urls[1]}"
        faults = [httpx.get(f"{url}/__emulator__/faults", timeout=5).json() for url in urls]
        assert [f["error_rate"] for f in faults] == [0.0, 1.0]
        assert [f["extra_latency"] for f in faults] == [0.5, 0.5]
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        assert httpx.post(f"{urls[1]}/api/chat", json=body, timeout=5).status_code == 500
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM is a clean stop
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_emulate_usage_mistakes_exit_2() -> None:
    for args in (["--fault", "3:busy=true"], ["--fault", "melt=1"], ["--instances", "0"]):
        result = run("emulate", *args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr


def test_metrics_serves_the_pool_and_status_reads_it(ollama_emulators: Any) -> None:
    up, down = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"], keep_alive=-1)
    down.stop()
    proc = subprocess.Popen(
        [*CLI, "metrics", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **pool_env(up, down)},
    )
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(url, timeout=5).text)}
        state = {
            (s.labels["gleitzeit_instance"], s.labels["state"]): s.value
            for s in families["gleitzeit_instance_state"].samples
        }
        assert state[("a", "healthy")] == 1 and state[("b", "unhealthy")] == 1
        result = run(
            "status", "--metrics-url", url, env={"GLEITZEIT_OLLAMA_INSTANCES": "x:http://127.0.0.1:1"}
        )
        assert result.returncode == 0, result.stderr
        rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:3]}
        assert rows["a"][:4] == ["a", "healthy", "closed", "0/4"]
        assert rows["a"][-1] == "llama3.2*"
        assert rows["b"][1] == "unhealthy"
        assert f"source {url}" in result.stdout
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()  # type: ignore[union-attr]


def test_status_from_a_closed_metrics_port_exits_1() -> None:
    result = run("status", "--metrics-url", "http://127.0.0.1:1/metrics")
    assert result.returncode == 1
    assert "cannot read metrics" in result.stderr and "Traceback" not in result.stderr


def test_cli_output_never_shows_credentials(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"])
    secret_url = emu.url.replace("http://", "http://alice:s3cret@")
    env = {"GLEITZEIT_OLLAMA_INSTANCES": f"box:{secret_url}"}
    for args in (("status",), ("status", "--json"), ("chat", "-m", "llama3.2", "hello")):
        result = run(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert "s3cret" not in result.stdout + result.stderr
    down = run("status", env={"GLEITZEIT_OLLAMA_INSTANCES": "box:http://alice:s3cret@127.0.0.1:9"})
    assert "s3cret" not in down.stdout + down.stderr
