"""Every script in examples/llama_index/ runs as a user runs it, against emulated servers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "llama_index"

# script -> a regular expression its output must contain.
EXPECTED = {
    "rag_index.py": r"indexed 4 files from data/\nquery engine: \[emulated llama3\.2\][\s\S]*"
    r"chat engine \(follow-up\): \[emulated llama3\.2\] an answer to 'And who notices",
    "streaming.py": r"served by ollama-\d after 1 attempt\(s\)[\s\S]*"
    r"astream_chat: \d+ chunks from ollama-\d\nleft a stream early; requests still in flight: 0",
    "tool_calling.py": r"chat_with_tools: get_weather\(\{'city': 'Tokyo'\}\) on gpu-1\n"
    r"predict_and_call: sunny, 24 °C\nagent: .*tools called: \['get_weather'\]",
    "routing_hints.py": r"chat\(instance_tags=\['gpu'\]\)\s+-> gpu-1[\s\S]*thinking=True\n"
    r"  the same with thinking=False\s+-> cpu-\d\s+model qwen3, thinking=False\n"
    r".*fallback llama3\.3:70b -> llama3\.2",
    "prometheus_metrics.py": r"embeddings\s+ollama-\d\s+success[\s\S]*"
    r"fallbacks: \{\('llama3\.3:70b', 'llama3\.2:latest'\): 1\.0\}[\s\S]*'failover': [1-9]",
}


def test_every_example_is_tested_and_listed() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in EXPECTED)


@pytest.fixture(scope="module")
def outputs(examples_running: Any) -> Iterator[dict[str, tuple[int, str, str]]]:
    """Every example run once, all at the same time (each spends most of its time importing)."""
    with examples_running(EXAMPLES, EXPECTED) as done:
        yield {script: (p.returncode, p.stdout, p.stderr) for script, p in done.items()}


# The fixture runs all examples at once inside the first of these tests: on two busy cores that
# can take longer than the suite's default 60 s per test, so the bound is the fixture's own.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_against_emulators(script: str, outputs: dict[str, tuple[int, str, str]]) -> None:
    returncode, stdout, stderr = outputs[script]
    output = stdout + stderr
    assert returncode == 0, output
    assert "Traceback" not in output and "Warning" not in output, output
    assert "emulated Ollama servers on 127.0.0.1" in stdout, output
    assert re.search(EXPECTED[script], output), f"{script}: no match for {EXPECTED[script]!r} in:\n{output}"
