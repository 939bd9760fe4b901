"""``gleitzeit-llm run``: the workflow pre-check takes hints exactly as the pool does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "gleitzeit_llm.cli"]


def run_workflow(tmp_path: Path, emulator: Any, hints: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "workflow.yaml").write_text(
        f"""\
name: "hints"
providers:
  ollama:
    type: "ollama_pool"
    instances:
      - url: "{emulator.url}"
        tags: ["gpu"]
tasks:
  - name: "Ask"
    method: "llm/chat"
    params:
      model: "llama3.2"
      prompt: "hi"
      {hints}
"""
    )
    return subprocess.run(
        [*CLI, "run", "workflow.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=os.environ,
    )


@pytest.fixture
def emulator(ollama_emulators: Any) -> Any:
    (one,) = ollama_emulators(1, models=["llama3.2"])
    return one


def test_a_strategy_in_any_spelling_the_check_passes_also_routes(emulator: Any, tmp_path: Path) -> None:
    result = run_workflow(tmp_path, emulator, 'load_balancing_strategy: "least loaded"')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"] == {"ok": 1, "failed": 0, "skipped": 0}
    assert len(emulator.requests_for("/api/chat")) == 1


def test_a_hint_the_pool_would_reject_fails_the_check_before_anything_runs(
    emulator: Any, tmp_path: Path
) -> None:
    result = run_workflow(tmp_path, emulator, 'instance_tags: ["gpu", 1]')
    assert result.returncode == 2, result.stderr
    assert "task 'Ask'" in result.stderr and "params.instance_tags" in result.stderr
    assert "list of strings" in result.stderr and "Traceback" not in result.stderr
    assert emulator.requests_for("/api/chat") == []
