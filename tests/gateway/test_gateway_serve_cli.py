"""``gleitzeit-llm serve`` run the way a user runs it, and what it checks before it starts."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.gateway.serve import startup_warnings
from gleitzeit_llm.gateway.settings import GatewaySettings

CLI = [sys.executable, "-m", "gleitzeit_llm.cli"]


def _listening_url(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if "listening on " in line:
                return line.rsplit("listening on ", 1)[1].strip()
        if proc.poll() is not None:
            break
    raise AssertionError(f"serve did not start: {seen}")


def test_serve_over_the_environment_with_a_key_from_the_environment(ollama_emulators: Any) -> None:
    (emulator,) = ollama_emulators(1)
    env = {
        **os.environ,
        "GLEITZEIT_OLLAMA_INSTANCES": emulator.url,
        "GLEITZEIT_GATEWAY_API_KEYS": "env-key, ",
    }
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--api-key", "flag-key"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        url = _listening_url(proc)
        with httpx.Client(base_url=url) as http:
            assert http.get("/api/tags").status_code == 401
            for key in ("flag-key", "env-key"):
                tags = http.get("/api/tags", headers={"Authorization": f"Bearer {key}"})
                assert tags.status_code == 200 and tags.json()["models"]
            assert http.get("/healthz").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "flag-key" not in err and "env-key" not in err


def test_serve_refuses_a_bad_flag_before_starting() -> None:
    done = subprocess.run([*CLI, "serve", "--workers", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--workers" in done.stderr


def test_startup_warnings_name_the_risk_and_the_fix() -> None:
    config = PoolConfig.load(["http://127.0.0.1:11434"])
    open_door = startup_warnings(config, GatewaySettings(), "0.0.0.0", 1)
    assert len(open_door) == 1 and "without an API key" in open_door[0] and "--api-key" in open_door[0]
    assert startup_warnings(config, GatewaySettings(api_keys=("k",)), "0.0.0.0", 1) == []
    assert startup_warnings(config, GatewaySettings(), "127.0.0.1", 1) == []
    assert startup_warnings(config, GatewaySettings(), "::1", 1) == []
    per_worker = startup_warnings(config, GatewaySettings(), "localhost", 4)
    assert len(per_worker) == 1 and "per worker" in per_worker[0] and "shared_state" in per_worker[0]


def test_the_core_never_imports_the_web_stack() -> None:
    code = (
        "import sys, gleitzeit_llm, gleitzeit_llm.cli, gleitzeit_llm.provider, gleitzeit_llm.passthrough;"
        "gleitzeit_llm.cli.build_parser();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_settings_never_show_keys() -> None:
    settings = GatewaySettings(api_keys=("s3cret",))
    assert "s3cret" not in repr(settings) and "1 key" in repr(settings)
    with pytest.raises(ValueError, match="max_body"):
        GatewaySettings(max_body=0)
    assert GatewaySettings.keys_from(["a", " b "], {"GLEITZEIT_GATEWAY_API_KEYS": "c,,a"}) == ("a", "b", "c")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_workers_with_shared_state_hold_one_cap_together(
    ollama_emulators: Any, redis_server: Any, tmp_path: Any
) -> None:
    # Two uvicorn workers, each with its own pool, share max_concurrent through Redis: the
    # server never sees more than its cap, and no warning says caps are per worker.
    (emulator,) = ollama_emulators(
        1, models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, time_scale=0.1
    )
    config = tmp_path / "pool.yaml"
    config.write_text(
        f"instances:\n  - {{id: e0, url: '{emulator.url}', max_concurrent: 2}}\n"
        f"load_balancing: {{queue_timeout: 60}}\n"
        f"shared_state: {{url: '{redis_server.url}'}}\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, timeout=60) as http:
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
                time.sleep(0.05)  # polling a child's start-up: no event to wait on

        def chat(_: int) -> int:
            body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
            # a new connection per call: uvicorn's workers share the socket, so both take calls
            with httpx.Client(base_url=url, timeout=60) as http:
                return http.post("/api/chat", json=body).status_code

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as threads:
            codes = list(threads.map(chat, range(16)))
        assert codes == [200] * 16
        assert emulator.max_concurrency_seen() == 2  # the cap held across both workers
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "per worker" not in err
