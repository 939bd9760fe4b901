"""Every script in examples/ runs as a user runs it, against emulated servers, and says what it should.

Each example is started as a subprocess (``python examples/X.py`` from the repository root) with
no GLEITZEIT_OLLAMA_* variables, so it starts its own emulators on 127.0.0.1. It must exit 0,
print no traceback, and print one line that shows it did its job.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# script -> a regular expression its output (stdout and stderr) must contain.
EXPECTED = {
    "basic_provider.py": r"served by (primary|secondary) \(http://127\.0\.0\.1:\d+\), "
    r"attempts=1, fallback_used=False",
    "strategies.py": r"require_gpu=True\s+gpu-1 100%\s+cpu-1\s+0%\s+cpu-2\s+0%",
    "client_chat.py": r"served by: (local|remote) after 1 attempt\(s\)",
    "pool_manager.py": r"get_instance\('llama3\.2:70b', tags=\['gpu'\]\)[\s\S]*Healthy instances: 2/2",
    "batch_processing.py": r"16 files, 0 failed; "
    r"per instance: \{'ollama-1': \d+, 'ollama-2': \d+, 'ollama-3': \d+\}",
    "monitoring_dashboard.py": r"=== Ollama Pool Status ===\nTotal: 3\nHealthy: \d"
    r"[\s\S]*Error Rate: \d+\.\d%",
    "failover.py": r"ollama-2: closed -> open[\s\S]*one down: 30/30 succeeded[\s\S]*healthy: 3/3",
    "fallback_model.py": r"asked for llama3\.3:70b, answered by llama3\.2 on ollama-\d\nfallback_used: True",
    "debug_logging.py": r"failover from_instance=ollama-1 model=llama3\.2:latest error=InstanceFailedError",
    "performance_tuning.py": r"strategy=latency_based health_check_interval=10s",
    "migration.py": r"before: fails: ConnectError\nafter: .*\[backup, attempts=2\]",
    "yaml_config.py": r"Model-Specific Task\s+-> \S+, model llama3\.2 \(fallback for mixtral:8x22b\)",
    "environment_config.py": r"GleitzeitClient\(\) -> (local|gpu): ",
}


def test_every_example_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)


def test_every_example_is_in_the_readme() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    missing = [name for name in EXPECTED if f"`{name}`" not in readme]
    assert not missing, f"examples/README.md does not list {missing}"


def run_example(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python examples/<script>`` from the repository root, without GLEITZEIT_* settings but ``env``."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("GLEITZEIT_OLLAMA_", "GLEITZEIT_EXAMPLE_"))
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=ROOT,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_against_emulators(script: str) -> None:
    result = run_example(script)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    assert "emulated Ollama servers on 127.0.0.1" in result.stdout, output
    assert re.search(EXPECTED[script], output), f"{script}: no match for {EXPECTED[script]!r} in:\n{output}"


def test_an_example_uses_the_servers_named_in_the_environment(ollama_emulators: Any) -> None:
    first, second = ollama_emulators(2, models=["llama3.2"])
    result = run_example("basic_provider.py", GLEITZEIT_OLLAMA_INSTANCES=f"one:{first.url},two:{second.url}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Using 2 real Ollama server(s) from the environment: one" in result.stdout, output
    assert "emulated Ollama servers" not in result.stdout, output  # it started none of its own
    assert re.search(r"served by (one|two) \(http://127\.0\.0\.1:\d+\), attempts=1", output), output
