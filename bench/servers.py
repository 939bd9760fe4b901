"""HTTP servers the gateway scenario measures, each in its own process on 127.0.0.1.

* :func:`gateway_server`: ``gleitzeit-llm serve`` over a pool of the given instances.
* :func:`litellm_server`: LiteLLM's proxy with the same instances as ``ollama_chat`` deployments,
  from a separate virtual environment (``bench/.venv-litellm``, made by ``make bench-litellm``),
  never from the project's own: LiteLLM is not a dependency of anything here.

A server is ready when its readiness URL answers 200 (polled with a deadline); its CPU time (the
process and every descendant, from /proc) lets the scenario report server CPU per request, which
other processes on a shared machine disturb far less than wall time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench._util import ROOT

#: LiteLLM's venv (``make bench-litellm`` installs the pinned version there).
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"

# LiteLLM reaches out to the internet unless told not to (the model cost map at import, telemetry):
# every bench byte stays on loopback.
_LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",
    "DISABLE_SCHEMA_UPDATE": "True",
    "NO_PROXY": "127.0.0.1,localhost",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int | str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the comm field: state ppid ... utime stime
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _tree(root: int) -> list[int]:
    """``root`` and its living descendants (a server's workers)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(entry.name)) is not None:
            parents[int(entry.name)] = stat[0]
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(child for child, parent in parents.items() if parent == pid and child not in tree)
    return tree


class ServerProcess:
    """A server child in its own session (so stopping it stops its workers too)."""

    def __init__(self, name: str, argv: Sequence[str], url: str, ready_path: str, env: dict[str, str]):
        self.name = name
        self.url = url
        self.ready_path = ready_path
        self._pids: list[int] = []  # filled in when ready
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")[-chars:]
        return ""

    def wait_ready(self, timeout: float) -> None:
        """Poll the readiness URL until it answers 200; raise with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    response = client.get(self.url + self.ready_path)
                    if response.status_code == 200:
                        self._pids = _tree(self.proc.pid)
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s ({last}): {self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU seconds of the server and the workers it had when it became ready (cheap: a few
        /proc reads, so it can be taken around every call)."""
        return sum(stat[1] for pid in self._pids if (stat := _stat(pid)) is not None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


def _listen(config: Path, port: int) -> list[str]:
    """The arguments both servers take alike: their configuration file and a loopback port."""
    return ["--config", str(config), "--host", "127.0.0.1", "--port", str(port)]


def gateway_available() -> str | None:
    """None when ``gleitzeit-llm serve`` can run from this checkout, else why not."""
    import importlib.util

    for module in ("gleitzeit_llm.gateway.serve", "starlette", "uvicorn"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return f"{module} is not installed (the gateway extra: pip install -e '.[gateway]')"
    return None


def gateway_server(instances: list[dict[str, Any]], api_key: str, *, timeout: float = 60.0) -> ServerProcess:
    """``gleitzeit-llm serve`` on a free loopback port over ``instances``, requiring ``api_key``
    (as a deployment would: the key check is part of every call's cost)."""
    port = free_port()
    config = Path(tempfile.mkdtemp(prefix="bench-gateway-")) / "pool.yaml"
    config.write_text(json.dumps({"instances": instances}))  # JSON is YAML
    argv = [sys.executable, "-m", "gleitzeit_llm.cli", "serve", *_listen(config, port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLEITZEIT_")}
    env["GLEITZEIT_GATEWAY_API_KEYS"] = api_key  # not on the command line, where ps shows it
    server = ServerProcess("gateway", argv, f"http://127.0.0.1:{port}", "/healthz", env)
    server.wait_ready(timeout)
    return server


def litellm_available() -> str | None:
    """None when LiteLLM's proxy is installed in bench/.venv-litellm, else why not."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        return f"LiteLLM is not installed in {LITELLM_VENV.relative_to(ROOT)} (make bench-litellm)"
    return None


def litellm_version() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout.strip() or None
    return None


def litellm_server(model: str, urls: list[str], api_key: str, *, timeout: float = 180.0) -> ServerProcess:
    """LiteLLM's proxy, one worker, ``model`` served by every URL as an ``ollama_chat`` deployment
    (its default simple-shuffle routing between them), no database, ``api_key`` as its master key
    (it refuses to start without one)."""
    port = free_port()
    config = Path(tempfile.mkdtemp(prefix="bench-litellm-")) / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": model,
                        "litellm_params": {"model": f"ollama_chat/{model}", "api_base": url},
                    }
                    for url in urls
                ],
                "litellm_settings": {"drop_params": True, "telemetry": False},
            }
        )
    )
    argv = [
        str(LITELLM_VENV / "bin" / "litellm"),
        *_listen(config, port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        **_LITELLM_ENV,
        "LITELLM_MASTER_KEY": api_key,
    }
    server = ServerProcess("litellm", argv, f"http://127.0.0.1:{port}", "/health/liveliness", env)
    server.wait_ready(timeout)
    return server
