"""Fixtures of the shared-state tests: real redis-server (``redis_server``), emulators in this
process, and application processes (``spawn``) running ``worker.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .store_support import pools  # noqa: F401 (a fixture for every module here)

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """One ``worker.py`` process: wait for its first line, tell it to go, read its result."""

    def __init__(self, spec: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def expect(self, line: str, timeout: float = 30.0) -> None:
        """Block until the worker prints ``line`` (its stdout is line-buffered by flush)."""
        assert self.proc.stdout is not None
        got = self.proc.stdout.readline().strip()
        if got != line:
            _, err = self.proc.communicate(timeout=timeout)
            raise AssertionError(f"worker printed {got!r}, expected {line!r}; stderr:\n{err}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def spawn() -> Iterator[Callable[[dict[str, Any]], Worker]]:
    """``spawn(spec) -> Worker``; every worker still running is killed after the test."""
    started: list[Worker] = []

    def make(spec: dict[str, Any]) -> Worker:
        worker = Worker(spec)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.communicate()


def run_together(workers: list[Worker], *, started: bool = False) -> list[dict[str, Any]]:
    """Start every worker's calls at once (all are ready first; ``started``: the caller saw
    their ``ready`` already); their results."""
    for worker in workers if not started else ():
        worker.expect("ready")
    for worker in workers:
        worker.go()
    return [worker.result() for worker in workers]
