"""``EmulatorProcess``: an emulated Ollama server in a child process.

For what a thread cannot show: a real process death (``kill()`` is SIGKILL, the kernel resets
the connections) and benchmarks where the server must not share the client's interpreter. The
child runs ``python -m gleitzeit_llm.testing``; faults, settings and the request log are reached
over plain HTTP through the control API under ``/__emulator__/``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from gleitzeit_llm.testing.models import EmulatedModel, ModelSpec, as_model

__all__ = ["EmulatorProcess"]

# Keyword arguments of EmulatorProcess -> command-line flags of the child.
_FLAGS = {
    "num_parallel": "--num-parallel",
    "max_loaded_models": "--max-loaded-models",
    "max_queue": "--max-queue",
    "keep_alive": "--keep-alive",
    "load_time": "--load-time",
    "ttft": "--ttft",
    "prompt_tokens_per_second": "--prompt-tps",
    "prompt_cache": "--prompt-cache",
    "multiuser_cache": "--multiuser-cache",
    "tokens_per_second": "--tokens-per-second",
    "reply_tokens": "--reply-tokens",
    "time_scale": "--time-scale",
    "error_rate": "--error-rate",
    "seed": "--seed",
    "version": "--ollama-version",
}


def _model_json(model: EmulatedModel) -> dict[str, Any]:
    values = asdict(model)
    return {f.name: values[f.name] for f in fields(model) if f.init and values[f.name] is not None}


class EmulatorProcess:
    """An :class:`~gleitzeit_llm.testing.OllamaEmulator` in a child process.

    ::

        with EmulatorProcess(models=["llama3.2"], time_scale=0.01) as proc:
            ...  # talk to proc.url
            proc.kill()       # SIGKILL: connections reset, then connection refused
            proc.restart()    # a fresh server on the same port
            proc.set_faults(error_rate=0.5)
            proc.requests()   # the request log, as dicts

    Keyword arguments are the emulator's settings (``num_parallel``, ``time_scale``,
    ``load_time``, ``error_rate``, ...; see ``python -m gleitzeit_llm.testing --help``).
    """

    def __init__(
        self,
        models: Iterable[ModelSpec] | None = None,
        *,
        loaded: Sequence[str] = (),
        # where the child listens, and how it is started
        host: str = "127.0.0.1",
        port: int = 0,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        **settings: Any,
    ) -> None:
        unknown = set(settings) - set(_FLAGS)
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(_FLAGS)}")
        self.host = host
        self.port = port
        self._models = None if models is None else [as_model(m) for m in models]
        self._loaded = list(loaded)
        self._settings = settings
        self._startup_timeout = startup_timeout
        self._python = python or sys.executable
        self._env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the emulator process has not been started yet")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The child's command line."""
        argv = [self._python, "-m", "gleitzeit_llm.testing", "--host", self.host, "--port", str(self.port)]
        if self._models is not None:
            argv += ["--models-json", json.dumps([_model_json(m) for m in self._models])]
        if self._loaded:
            argv += ["--loaded", ",".join(self._loaded)]
        for name, value in self._settings.items():
            if value is not None:
                argv += [_FLAGS[name], str(value)]
        return argv

    def start(self) -> EmulatorProcess:
        """Start the child and wait until it listens (on the same port as before, if any)."""
        if self.alive:
            return self
        self._reap()
        proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, env=self._env)
        self._proc = proc
        try:
            url = self._read_url(proc)
        except BaseException:
            self._terminate(signal.SIGKILL)
            raise
        self.port = int(url.rsplit(":", 1)[1])
        return self

    def _read_url(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + self._startup_timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"emulator process did not start within {self._startup_timeout} s")
            ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
            if ready:
                byte = os.read(proc.stdout.fileno(), 1)
                if not byte:
                    raise RuntimeError(f"emulator process exited with status {proc.wait()} before listening")
                line += byte
            elif proc.poll() is not None:
                raise RuntimeError(f"emulator process exited with status {proc.returncode} before listening")
        return line.decode().strip()

    def kill(self) -> None:
        """SIGKILL: a real, abrupt process death (no clean shutdown)."""
        self._terminate(signal.SIGKILL)

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL if it does not exit in time)."""
        self._terminate(signal.SIGTERM, timeout)

    def restart(self) -> EmulatorProcess:
        """Kill the child (if alive) and start a fresh one on the same port."""
        self.kill()
        return self.start()

    def close(self) -> None:
        """Stop the child (gracefully) and release its pipe; idempotent."""
        self.terminate()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "alive" if self.alive else "stopped"
        return f"<EmulatorProcess {self.url if self.port else '?'} pid={self.pid} {state}>"

    def _terminate(self, signum: int, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signum)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    # -- control API -----------------------------------------------------------------------

    def _admin(self, method: str, action: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(dict(body or {})).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/__emulator__/{action}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            raise RuntimeError(f"emulator control API: {exc.code} {detail}") from None

    def state(self) -> dict[str, Any]:
        """Loaded models, in-flight requests, settings, faults, load counts."""
        return self._admin("GET", "state")

    def faults(self) -> dict[str, Any]:
        return self._admin("GET", "faults")

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Same names as ``OllamaEmulator.set_faults``."""
        return self._admin("POST", "faults", faults)

    def clear_faults(self) -> None:
        self._admin("DELETE", "faults")

    def requests(self) -> list[dict[str, Any]]:
        """The request log (``RequestRecord`` fields as dicts)."""
        return self._admin("GET", "requests")

    def clear_log(self) -> None:
        self._admin("DELETE", "requests")

    def reset(self, *, unload: bool = False) -> None:
        """Clear log, faults and tool scripts (and unload every model)."""
        self._admin("POST", "reset", {"unload": unload})

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self._admin("POST", "settings", settings)

    def script_tool_calls(self, calls: Sequence[Any], *, persistent: bool = False) -> None:
        self._admin("POST", "tool_calls", {"calls": list(calls), "persistent": persistent})

    def load(self, model: str, keep_alive: float | str | None = None) -> list[str]:
        return self._admin("POST", "load", {"model": model, "keep_alive": keep_alive})["loaded"]

    def unload(self, model: str | None = None) -> list[str]:
        return self._admin("POST", "unload", {"model": model})["loaded"]

    def prompt_caches(self, model: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """The loaded models' prompt-cache slots (as ``OllamaEmulator.prompt_caches``)."""
        return self._admin("GET", "prompt_cache", {"model": model})

    def clear_prompt_caches(self, model: str | None = None) -> None:
        self._admin("DELETE", "prompt_cache", {"model": model})
