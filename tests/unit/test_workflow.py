"""Workflows: the file format, its validation, and the runner (against a fake pool, no sockets)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from gleitzeit_llm.workflow import Workflow, WorkflowError

GUIDE_WORKFLOW = """\
name: "Multi-Instance Workflow"

providers:
  ollama:
    type: "ollama_pool"
    instances:
      - id: "cpu-1"
        url: "http://localhost:11434"
        models: ["llama3.2", "phi"]
        tags: ["cpu", "fast"]
      - id: "gpu-1"
        url: "http://gpu1:11434"
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
      model: "${model_name}"
      load_balancing_strategy: "model_affinity"
      fallback_model: "llama3.2"
      max_latency: 1000
      messages:
        - role: "user"
          content: "${prompt}"
"""


def chat(name: str, content: str = "hi", **extra: Any) -> dict[str, Any]:
    params = {"model": "llama3.2", "messages": [{"role": "user", "content": content}]}
    params.update(extra.pop("params", {}))
    return {"name": name, "method": "llm/chat", "params": params, **extra}


class FakePool:
    """``execute`` like the provider's; replies ``reply:<last message>``; fails models named ``broken``."""

    def __init__(self, wait_for: int = 0) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.running = 0
        self.peak = 0
        self._wait_for = wait_for
        self._all_started = asyncio.Event()

    async def execute(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        from gleitzeit_llm import AllInstancesFailedError

        self.calls.append((method, copy.deepcopy(params)))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if len(self.calls) >= self._wait_for:
                self._all_started.set()
            await asyncio.wait_for(self._all_started.wait(), 10)  # a barrier: all run at once
            await asyncio.sleep(0)
            if params["model"] == "broken":
                raise AllInstancesFailedError("all 4 attempt(s) failed")
            if method == "llm/embed":
                return {"model": params["model"], "embeddings": [[0.5, 0.25]], "pool": {"instance_id": "a"}}
            text = params.get("prompt") or params["messages"][-1]["content"]
            out = {
                "model": params["model"],
                "eval_count": 3,
                "pool": {"instance_id": "a", "instance_url": "x"},
            }
            if method == "llm/generate":
                return {**out, "response": f"reply:{text}"}
            return {**out, "message": {"role": "assistant", "content": f"reply:{text}"}}
        finally:
            self.running -= 1


def error_for(data: dict[str, Any], variables: dict[str, Any] | None = None) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        Workflow.from_dict(data, variables, source="wf.yaml")
    return caught.value


# -- the format --------------------------------------------------------------------------------


def test_the_guides_workflow_loads_with_its_pool_and_hints(tmp_path: Path) -> None:
    path = tmp_path / "workflow.yaml"
    path.write_text(GUIDE_WORKFLOW)
    workflow = Workflow.load(path, {"model_name": "mixtral", "prompt": "Why?"})
    assert workflow.name == "Multi-Instance Workflow"
    assert [t.name for t in workflow.tasks] == ["Quick Analysis", "Deep Analysis", "Model-Specific Task"]
    deep, specific = workflow.tasks[1].params, workflow.tasks[2].params
    assert deep["instance_tags"] == ["gpu"] and deep["require_gpu"] is True
    assert specific["model"] == "mixtral"
    assert specific["messages"][0]["content"] == "Why?"
    assert specific["fallback_model"] == "llama3.2" and specific["max_latency"] == 1000
    config = workflow.pool_config()
    assert config is not None
    assert [i.id for i in config.instances] == ["cpu-1", "gpu-1"]


def test_an_undefined_variable_names_the_task_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "workflow.yaml"
    path.write_text(GUIDE_WORKFLOW)
    with pytest.raises(WorkflowError) as caught:
        Workflow.load(path, {"prompt": "Why?"})
    error = caught.value
    assert error.task == "Model-Specific Task"
    assert error.field == "params.model"
    assert "undefined variable ${model_name}" in str(error)
    assert "--var model_name=" in str(error)
    assert f"{path}, line 41: task " in str(error)  # the line of params.model


def test_variables_from_the_file_are_defaults_and_keep_their_type() -> None:
    data = {
        "variables": {"model": "llama3.2", "latency": 500, "who": "world"},
        "tasks": [chat("a", "hello ${who}", params={"model": "${model}", "max_latency": "${latency}"})],
    }
    task = Workflow.from_dict(data).tasks[0]
    assert task.params["max_latency"] == 500
    assert task.params["messages"][0]["content"] == "hello world"
    task = Workflow.from_dict(data, {"who": "you", "latency": "250"}).tasks[0]
    assert task.params["messages"][0]["content"] == "hello you"
    assert task.params["max_latency"] == 250.0  # --var values are text; hints get their type
    hints = {"require_gpu": "${gpu}", "instance_tags": "${tags}"}
    task = Workflow.from_dict(
        {"tasks": [chat("a", params=hints)]}, {"gpu": "yes", "tags": "gpu, large"}
    ).tasks[0]
    assert task.params["require_gpu"] is True
    assert task.params["instance_tags"] == ["gpu", "large"]


async def test_literal_dollar_braces_survive_and_variable_values_are_not_expanded() -> None:
    data = {"tasks": [chat("a", "keep $${this} and ${v}")]}
    pool = FakePool()
    result = await Workflow.from_dict(data, {"v": "${not_a_var}"}).run(pool, max_concurrent=4)  # type: ignore[arg-type]
    assert result.tasks["a"].response == "reply:keep ${this} and ${not_a_var}"


@pytest.mark.parametrize(
    ("data", "task", "field", "text"),
    [
        ({"tasks": [chat("a", params={"model": ""})]}, "a", "params.model", "required"),
        (
            {"tasks": [{"name": "a", "params": {"model": "m"}}]},
            "a",
            "params.messages",
            "required for llm/chat",
        ),
        (
            {"tasks": [{"name": "a", "method": "llm/embed", "params": {"model": "m"}}]},
            "a",
            "params.input",
            "required",
        ),
        ({"tasks": [chat("a", method="llm/complete")]}, "a", "method", "unknown method 'llm/complete'"),
        ({"tasks": [chat("a", protocol="mcp/v1")]}, "a", "protocol", "unsupported protocol"),
        ({"tasks": [chat("a", prams={})]}, "a", "prams", "did you mean 'params'?"),
        ({"tasks": [chat("a", params={"require_gpu": "maybe"})]}, "a", "params.require_gpu", "true or false"),
        ({"tasks": [chat("a", params={"max_latency": -5})]}, "a", "params.max_latency", "positive"),
        ({"tasks": [chat("a", params={"instance_tags": 3})]}, "a", "params.instance_tags", "list of strings"),
        (
            {"tasks": [chat("a", params={"load_balancing_strategy": "fastest"})]},
            "a",
            "params.load_balancing_strategy",
            "least_loaded",
        ),
        ({"tasks": [chat("a", params={"temprature": 0.2})]}, "a", "params.temprature", "unknown field"),
        (
            {"tasks": [chat("a", params={"messages": [{"role": "robot", "content": "x"}]})]},
            "a",
            "params.messages[0].role",
            "'user'",
        ),
        ({"tasks": [chat("a", depends_on=["b"])]}, "a", "depends_on", "no task named 'b'"),
        ({"tasks": [chat("a", "${tasks.a.response}")]}, "a", "params.messages[0].content", "itself"),
        ({"tasks": [chat("a", "${tasks.b.text}"), chat("b")]}, "a", "params.messages[0].content", "text"),
        ({"tasks": [chat("a", "${1x}")]}, "a", "params.messages[0].content", "invalid placeholder"),
        ({"tasks": [chat("a"), chat("a")]}, "a", "name", "used twice (tasks[0] and tasks[1])"),
        (
            {"tasks": [chat("a", depends_on=["b"]), chat("b", "${tasks.a.response}")]},
            "a",
            "depends_on",
            "cycle: a -> b -> a",
        ),
    ],
)
def test_a_malformed_task_is_an_error_naming_task_and_field(
    data: dict[str, Any], task: str, field: str, text: str
) -> None:
    error = error_for(data)
    assert error.task == task
    assert str(error).startswith(f"wf.yaml: task {task!r}: ")
    assert error.field == field
    assert text in str(error)


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        ([], "", "expected a mapping"),
        ({"tasks": []}, "tasks", "non-empty list"),
        ({"task": [chat("a")]}, "task", "did you mean 'tasks'?"),
        ({"tasks": ["a"]}, "tasks[0]", "expected a mapping"),
        ({"tasks": [{"params": {}}]}, "tasks[0].name", "required"),
        ({"variables": ["x"], "tasks": [chat("a")]}, "variables", "mapping"),
    ],
)
def test_a_malformed_file_names_the_field(data: Any, field: str, text: str) -> None:
    error = error_for(data)
    assert error.task is None
    assert (error.field or "") == field
    assert text in str(error)


def test_malformed_yaml_points_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tasks:\n  - name: a\n    params: {model: [\n")
    with pytest.raises(WorkflowError, match=r"bad\.yaml, line \d+, column \d+: malformed YAML"):
        Workflow.load(path)
    with pytest.raises(WorkflowError, match="not found"):
        Workflow.load(tmp_path / "missing.yaml")


# -- running -----------------------------------------------------------------------------------


async def test_independent_tasks_run_at_once() -> None:
    pool = FakePool(wait_for=3)  # each call waits until all three have started
    workflow = Workflow.from_dict({"tasks": [chat("a"), chat("b"), chat("c")]})
    result = await workflow.run(pool, max_concurrent=10)  # type: ignore[arg-type]
    assert result.ok and pool.peak == 3
    assert list(result.tasks) == ["a", "b", "c"]


async def test_max_concurrent_bounds_the_tasks_in_flight() -> None:
    pool = FakePool()
    workflow = Workflow.from_dict({"tasks": [chat(str(n)) for n in range(5)]})
    result = await workflow.run(pool, max_concurrent=1)  # type: ignore[arg-type]
    assert result.ok and pool.peak == 1


async def test_a_task_output_feeds_its_dependents_and_orders_them() -> None:
    data = {
        "tasks": [
            chat("summary", "Shorten: ${tasks.draft.response}"),  # listed first, runs second
            {"name": "draft", "method": "llm/generate", "params": {"model": "llama3.2", "prompt": "Write"}},
            chat("vector", method="llm/embed", params={"input": "x", "messages": None}),
            chat("uses vector", "${tasks.vector.response}", depends_on="summary"),
        ]
    }
    data["tasks"][2]["params"].pop("messages")
    workflow = Workflow.from_dict(data)
    assert workflow.tasks[0].name == "draft"  # dependencies first
    assert workflow.tasks[1].depends_on == ("draft",)
    pool = FakePool()
    result = await workflow.run(pool, max_concurrent=4)  # type: ignore[arg-type]
    assert result.tasks["summary"].response == "reply:Shorten: reply:Write"
    assert result.tasks["uses vector"].response == "reply:[[0.5, 0.25]]"  # embeddings as JSON text
    assert list(result.tasks) == ["summary", "draft", "vector", "uses vector"]  # the file's order


async def test_a_failed_task_skips_its_dependents_and_the_rest_runs() -> None:
    data = {
        "tasks": [
            chat("bad", params={"model": "broken"}),
            chat("after bad", "${tasks.bad.response}"),
            chat("after after", depends_on=["after bad"]),
            chat("fine"),
        ]
    }
    result = await Workflow.from_dict(data).run(FakePool(), max_concurrent=4)  # type: ignore[arg-type]
    assert not result.ok
    assert result.tasks["bad"].status == "failed"
    assert "AllInstancesFailedError" in (result.tasks["bad"].error or "")
    assert result.tasks["after bad"].status == "skipped"
    assert result.tasks["after after"].status == "skipped"
    assert result.tasks["fine"].status == "ok"
    summary = result.as_dict()
    assert summary["summary"] == {"ok": 1, "failed": 1, "skipped": 2}
    assert result.failed == ["bad", "after bad", "after after"]


async def test_results_leave_out_instance_urls() -> None:
    result = await Workflow.from_dict({"tasks": [chat("a")]}).run(FakePool(), max_concurrent=1)  # type: ignore[arg-type]
    task = result.as_dict()["tasks"]["a"]
    assert task["pool"] == {"instance_id": "a"}
    assert task["usage"] == {"prompt_tokens": None, "output_tokens": 3}
