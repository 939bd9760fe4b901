"""Every script in examples/langchain/ runs as a user runs it, against emulated servers.

All scripts start at once (each is a subprocess that starts its own emulators on 127.0.0.1);
each must exit 0, print no traceback and print the line that shows it did its job.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "langchain"

EXPECTED = {
    "lcel_chain.py": r"6 answers in one batch[\s\S]*served by: ollama-\d=\d",
    "streaming.py": r"streamed \d+ tokens from ollama-\d \(attempts=1[\s\S]*async: \[emulated llama3\.2\]"
    r"[\s\S]*requests still active in the pool: 0",
    "tool_calling.py": r"tool call: get_weather\(\{'city': 'Tokyo'\}\) served by ollama-\d\n"
    r"answer: \[emulated",
    "structured_output.py": r"parsed: City\(name=[\s\S]*City object from ollama-\d",
    "routing_hints.py": r"per call: instance_tags=\['gpu'\]\s+gpu-1=4\n"
    r"per call: require_gpu=True\s+gpu-1=4\n"
    r"with_routing\(instance_tags=\['cpu'\]\)\s+cpu-[12]=\d(, cpu-2=\d)?\n"
    r"\.\.\.and through bind_tools\(\[\]\)\s+cpu-[12]=\d(, cpu-2=\d)?\n"
    r"[\s\S]*overridden per call with \['gpu'\]\)?\s+gpu-1=4\n"
    r"asked for llama3\.3:70b, answered by llama3\.2 on \S+ \(fallback_used=True\)",
    "prometheus_metrics.py": r"gleitzeit_calls_total\{[^}]*gen_ai_request_model=\"llama3\.2:latest\"[^}]*"
    r"outcome=\"success\"[^}]*\} \d[\s\S]*"
    r"gleitzeit_call_fallbacks_total\{[^}]*gleitzeit_fallback_model=\"llama3\.2:latest\"[\s\S]*"
    r"gleitzeit_pool_failovers_total\{gleitzeit_instance=\"ollama-1\"\} [1-9]",
    "embeddings.py": r"24 documents, 768 dimensions, batches per instance: "
    r"\{'ollama-1': 2, 'ollama-2': 2, 'ollama-3': 2\}\n"
    r"closest to 'Why is the sky blue\?': 'The blue sky",
}


def test_every_example_is_tested_and_listed() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert [name for name in EXPECTED if f"`{name}`" not in readme] == []


@pytest.fixture(scope="module")
def outputs(examples_running: Any) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Run all examples at once (without GLEITZEIT_* settings): script -> finished process."""
    with examples_running(EXAMPLES, EXPECTED, merge_stderr=True) as done:
        yield done


# The fixture runs all examples at once inside the first of these tests: on two busy cores that
# can take longer than the suite's default 60 s per test, so the bound is the fixture\'s own.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_against_emulators(
    script: str, outputs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = outputs[script]
    assert result.returncode == 0, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    assert "emulated Ollama servers on 127.0.0.1" in result.stdout, result.stdout
    assert re.search(EXPECTED[script], result.stdout), f"{script}: no match in:\n{result.stdout}"
