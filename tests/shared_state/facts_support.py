"""Helpers of the shared-facts tests: a store-less "process" (its own handles in a LocalState, its
own SharedFacts, and the round trips a shared store would make, written out plainly), and a
real application process (:class:`FactsWorker`, driving ``facts_worker.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from gleitzeit_llm.config import InstanceConfig, LoadBalancingConfig
from gleitzeit_llm.errors import InstanceBusyError, ModelNotFoundError
from gleitzeit_llm.ollama.names import model_key, spelling_key
from gleitzeit_llm.routing.health import ProbeResult
from gleitzeit_llm.routing.learning import Observation, Outcome, Transitions
from gleitzeit_llm.state import LocalState
from gleitzeit_llm.state.redis.facts import SharedFacts

PREFIX = "gleitzeit:{facts-test}:facts"


class Clock:
    """A monotonic clock that each 'process' has with its own origin."""

    def __init__(self, origin: float) -> None:
        self.now = origin

    def __call__(self) -> float:
        return self.now


def success(
    model: str = "llama3.2",
    *,
    ttft: float = 0.1,
    duration: float = 0.5,
    tokens: int | None = 10,
    eval_duration: float | None = None,
    keep_alive: float | None = None,
    spelling: str | None = None,
) -> Observation:
    return Observation(
        Outcome.SUCCESS,
        model_key(model),
        spelling_key(spelling or model),
        False,
        False,
        duration,
        ttft,
        tokens,
        eval_duration,
        False,
        keep_alive,
    )


def failure(duration: float = 0.2) -> Observation:
    return Observation(
        Outcome.FAILURE, "llama3.2", "llama3.2", False, False, duration, None, error=ConnectionError("reset")
    )


def busy(retry_after: float | None) -> Observation:
    error = InstanceBusyError("server busy", status=503, retry_after=retry_after)
    return Observation(Outcome.BUSY, "llama3.2", "llama3.2", False, False, 0.01, None, error=error)


def missing(spelling: str) -> Observation:
    error = ModelNotFoundError(f"model '{spelling}' not found", status=404, model=spelling)
    model, spelled = model_key(spelling), spelling_key(spelling)
    return Observation(Outcome.MODEL_MISSING, model, spelled, False, False, 0.01, None, error=error)


class FactsProcess:
    """One process's view of the pool: handles, facts, and a client of its own.

    ``wall`` is the wall clock this process reads (shared by the test's processes unless moved);
    ``clock`` its monotonic clock, with an origin of its own.
    """

    def __init__(
        self,
        url: str,
        token: str,
        instance_ids: Sequence[str] = ("a", "b"),
        *,
        origin: float = 0.0,
        wall: list[float] | None = None,
        **facts_options: Any,
    ) -> None:
        self.clock = Clock(origin)
        self.wall = wall if wall is not None else [1_000_000.0]
        self.store = LocalState(LoadBalancingConfig(), clock=self.clock)
        self.instances = [
            self.store.create(InstanceConfig(id=i, url=f"http://127.0.0.1:{11400 + n}", max_concurrent=4))
            for n, i in enumerate(instance_ids)
        ]
        self.by_id = {i.id: i for i in self.instances}
        self.facts = SharedFacts(PREFIX, token, **facts_options)
        self.redis = redis.Redis.from_url(url, socket_timeout=2.0)

    def close(self) -> None:
        self.redis.close()

    @property
    def now(self) -> float:
        return self.clock.now

    @property
    def wall_now(self) -> float:
        return self.wall[0]

    def advance(self, seconds: float) -> None:
        """Time passes for this process (its monotonic clock; the wall clock is the test's)."""
        self.clock.now += seconds

    def finish(self, instance_id: str, obs: Observation) -> Transitions:
        """One attempt: acquire, release by the local rules, then the release's round trip."""
        inst = self.by_id[instance_id]
        assert self.store.acquire(inst, obs.model, self.now, False).admitted
        learned = self.store.release(inst, obs, self.now)
        pipe = self.redis.pipeline(transaction=False)
        self.facts.on_release(pipe, inst, obs, learned, self.wall_now, self.now)
        pipe.execute()
        return learned

    def probe(self, instance_id: str, result: ProbeResult) -> Transitions:
        inst = self.by_id[instance_id]
        learned = self.store.record_probe(inst, result, self.now)
        pipe = self.redis.pipeline(transaction=False)
        self.facts.on_probe(pipe, inst, result, self.wall_now)
        pipe.execute()
        return learned

    def refresh(self) -> dict[str, Transitions]:
        """One snapshot refresh: the pipelined read, then folding it into the handles."""
        pipe = self.redis.pipeline(transaction=False)
        ids = [i.id for i in self.instances]
        self.facts.read(pipe, ids)
        replies = pipe.execute(raise_on_error=False)
        return self.facts.apply(replies, self.instances, self.now, self.wall_now)


def _readline(stream: Any, timeout: float) -> str:
    """One line from ``stream``, or "" after ``timeout`` seconds (read on a helper thread)."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else ""


class FactsWorker:
    """A ``facts_worker.py`` process: send a command, read its one-line answer."""

    WORKER = Path(__file__).with_name("facts_worker.py")
    ROOT = Path(__file__).resolve().parents[2]

    def __init__(self, spec: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(self.WORKER), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"worker exited ({self.proc.returncode}); stderr:\n{err[-3000:]}")
        return line.strip()

    def ready(self) -> FactsWorker:
        line = self._line()
        assert line == "ready", line
        return self

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def chat(self, n: int = 1, model: str = "llama3.2", **hints: Any) -> dict[str, Any]:
        return self.ask(op="chat", n=n, model=model, hints=hints)

    def inspect(self) -> dict[str, Any]:
        return self.ask(op="inspect")

    def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        """Ask ``inspect`` until ``predicate`` holds on its answer (the snapshot refresh runs in
        the background; each ask is a round trip to the worker, no sleep between)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.inspect()
            if predicate(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached in {timeout}s; last: {seen}")
            time.sleep(0.02)  # pacing the asks (the worker answers at once)

    def close(self) -> None:
        """Quit: the pool must close within 30 s (``closed``); then the interpreter's own exit
        gets 15 s before the process is killed."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            closed = ""
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                closed = _readline(self.proc.stdout, 30.0)
            except OSError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            _, err = self.proc.communicate()
            assert closed.strip() == "closed", f"the worker's pool did not close; stderr:\n{err[-5000:]}"
            return
        self.proc.communicate()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)
