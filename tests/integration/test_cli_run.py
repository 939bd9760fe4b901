"""``gleitzeit-llm run workflow.yaml``: the guide's workflow against emulators, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "gleitzeit_llm.cli"]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env={**os.environ, **(env or {})}
    )


def guide_workflow(cpu: Any, gpu: Any) -> str:
    """The guide's workflow example, pointed at two emulators, plus a dependent summary task."""
    return f"""\
name: "Multi-Instance Workflow"
providers:
  ollama:
    type: "ollama_pool"
    instances:
      - id: "cpu-1"
        url: "{cpu.url}"
        models: ["llama3.2", "phi"]
        tags: ["cpu", "fast"]
      - id: "gpu-1"
        url: "{gpu.url}"
        models: ["llama3.2:70b", "mixtral"]
        tags: ["gpu", "large"]
tasks:
  - name: "Quick Analysis"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "llama3.2"
      messages:
        - role: "user"
          content: "Analyze this quickly"
  - name: "Deep Analysis"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "llama3.2:70b"
      instance_tags: ["gpu"]
      require_gpu: true
      messages:
        - role: "user"
          content: "Perform deep analysis"
  - name: "Model-Specific Task"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "${{model_name}}"
      load_balancing_strategy: "model_affinity"
      fallback_model: "llama3.2"
      messages:
        - role: "user"
          content: "${{prompt}}"
  - name: "Summary"
    method: "llm/generate"
    params:
      model: "phi"
      prompt: "Summarise: ${{tasks.Deep Analysis.response}}"
"""


def emulators(make: Any) -> tuple[Any, Any]:
    cpu, gpu = make(2, models=["llama3.2", "phi", "llama3.2:70b", "mixtral"])
    gpu.responder = lambda request: "deep thoughts"
    return cpu, gpu


def test_the_guides_workflow_runs_across_the_pool(ollama_emulators: Any, tmp_path: Path) -> None:
    cpu, gpu = emulators(ollama_emulators)
    (tmp_path / "workflow.yaml").write_text(guide_workflow(cpu, gpu))
    result = run(
        "run",
        "workflow.yaml",
        "--var",
        "model_name=mistral",
        "--var",
        "prompt=Why is the sky blue?",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["workflow"] == "Multi-Instance Workflow"
    assert out["ok"] is True and out["summary"] == {"ok": 4, "failed": 0, "skipped": 0}
    tasks = out["tasks"]
    assert list(tasks) == ["Quick Analysis", "Deep Analysis", "Model-Specific Task", "Summary"]
    assert tasks["Deep Analysis"]["pool"]["instance_id"] == "gpu-1"
    assert tasks["Deep Analysis"]["response"] == "deep thoughts"
    specific = tasks["Model-Specific Task"]
    assert specific["pool"]["fallback_used"] is True and specific["model"] == "llama3.2"  # mistral is nowhere
    assert "instance_url" not in specific["pool"]
    summary_prompts = [
        r.body["prompt"] for r in cpu.requests_for("/api/generate") + gpu.requests_for("/api/generate")
    ]
    assert summary_prompts == ["Summarise: deep thoughts"]  # the dependency's output, filled in


def test_a_failed_task_exits_1_and_output_can_go_to_a_file(ollama_emulators: Any, tmp_path: Path) -> None:
    cpu, gpu = emulators(ollama_emulators)
    gpu.set_faults(error_rate=1.0)  # the only GPU instance: Deep Analysis fails, Summary is skipped
    (tmp_path / "workflow.yaml").write_text(guide_workflow(cpu, gpu))
    result = run(
        "run",
        "workflow.yaml",
        "--var",
        "model_name=llama3.2",
        "--var",
        "prompt=hi",
        "-o",
        "out.json",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    tasks = json.loads((tmp_path / "out.json").read_text())["tasks"]
    assert tasks["Deep Analysis"]["status"] == "failed"
    assert tasks["Summary"]["status"] == "skipped"
    assert tasks["Quick Analysis"]["status"] == "ok"
    assert "task 'Deep Analysis' failed" in result.stderr
    assert "task 'Summary' skipped" in result.stderr


def test_a_malformed_workflow_exits_2_naming_task_and_field(ollama_emulators: Any, tmp_path: Path) -> None:
    cpu, gpu = emulators(ollama_emulators)
    (tmp_path / "workflow.yaml").write_text(guide_workflow(cpu, gpu))
    missing_var = run("run", "workflow.yaml", "--var", "prompt=hi", cwd=tmp_path)
    assert missing_var.returncode == 2
    assert missing_var.stderr.startswith(
        "gleitzeit-llm: workflow.yaml, line 37: task 'Model-Specific Task': "
    )
    assert "params.model: undefined variable ${model_name}" in missing_var.stderr
    (tmp_path / "bad.yaml").write_text(
        guide_workflow(cpu, gpu).replace("require_gpu: true", "require_gpu: maybe")
    )
    bad_hint = run("run", "bad.yaml", "--var", "model_name=x", "--var", "prompt=y", cwd=tmp_path)
    assert bad_hint.returncode == 2
    assert "task 'Deep Analysis': params.require_gpu: must be true or false" in bad_hint.stderr
    bad_var = run("run", "workflow.yaml", "--var", "model_name", cwd=tmp_path)
    assert bad_var.returncode == 2 and "NAME=VALUE" in bad_var.stderr
    for result in (missing_var, bad_hint, bad_var):
        assert "Traceback" not in result.stderr
    assert cpu.requests_for("/api/chat") == gpu.requests_for("/api/chat") == []  # nothing ran


def test_check_validates_without_running(ollama_emulators: Any, tmp_path: Path) -> None:
    cpu, gpu = emulators(ollama_emulators)
    (tmp_path / "workflow.yaml").write_text(guide_workflow(cpu, gpu))
    result = run(
        "run", "workflow.yaml", "--check", "--var", "model_name=m", "--var", "prompt=p", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "workflow.yaml: 4 task(s), valid"
    assert "  Summary: llm/generate phi  after Deep Analysis" in result.stdout
    assert cpu.requests == gpu.requests == []  # no pool was even opened


def test_config_flag_replaces_the_workflows_pool(ollama_emulators: Any, tmp_path: Path) -> None:
    cpu, gpu = emulators(ollama_emulators)
    (other,) = ollama_emulators(1, models=["llama3.2"])
    workflow = "tasks:\n  - name: only\n    params: {model: llama3.2, prompt: hi}\n"
    (tmp_path / "workflow.yaml").write_text(
        guide_workflow(cpu, gpu).split("tasks:")[0] + workflow
    )  # providers: cpu-1 and gpu-1
    (tmp_path / "pool.yaml").write_text(f"instances: [{{id: elsewhere, url: '{other.url}'}}]\n")
    result = run("--config", "pool.yaml", "run", "workflow.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tasks"]["only"]["pool"]["instance_id"] == "elsewhere"
