"""YAML workflows: a pool (``providers:``) and LLM tasks that run concurrently across it.

::

    workflow = Workflow.load("workflow.yaml", variables={"model_name": "llama3.2"})
    result = await workflow.run()            # the workflow's own pool (or pass pool=provider)
    print(json.dumps(result.as_dict(), indent=2))

The format (``docs/workflows.md``)::

    name: "Multi-Instance Workflow"
    providers:                      # optional: the pool (else --config / the environment)
      ollama: {type: ollama_pool, instances: [...], load_balancing: {...}}
    variables:                      # optional defaults, overridden by --var / variables=
      model_name: llama3.2
    tasks:
      - name: "Quick Analysis"
        protocol: "llm/v1"          # optional
        method: "llm/chat"          # llm/chat (default), llm/generate or llm/embed
        params: {model: "${model_name}", messages: [...], instance_tags: [cpu]}
      - name: "Summary"
        depends_on: ["Quick Analysis"]
        params: {model: llama3.2, prompt: "Shorten: ${tasks.Quick Analysis.response}"}

Tasks are independent and run at once unless they declare ``depends_on`` or use another task's
``${tasks.NAME.response}`` (which makes the dependency implicit). A task whose dependency failed
is skipped. Every mistake in the file is found before any task runs, as a :class:`WorkflowError`
that names the task and the field.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.config.yamlfile import YamlFile, read_yaml
from gleitzeit_llm.errors import ConfigError, GleitzeitError, RequestError

if TYPE_CHECKING:
    from gleitzeit_llm.config import PoolConfig
    from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = [
    "METHODS",
    "TaskResult",
    "Workflow",
    "WorkflowError",
    "WorkflowResult",
    "WorkflowTask",
    "public_pool_info",
    "response_of",
    "validate_request",
]

METHODS = ("llm/chat", "llm/generate", "llm/embed")
PROTOCOL = "llm/v1"
_TOP_KEYS = ("name", "description", "providers", "variables", "tasks")
_TASK_KEYS = ("name", "description", "protocol", "method", "params", "depends_on")
_INPUT_FIELD = {"llm/chat": "messages", "llm/generate": "prompt", "llm/embed": "input"}
_TEXT_FIELD = ("response",)  # what ${tasks.NAME.<field>} may name
# ``$${`` is a literal ``${``; ``${...}`` is a placeholder.
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TASK_REF = re.compile(r"tasks\.(.+)\.([A-Za-z_]+)")
_PENDING = "\x00pending\x00"  # stands for a dependency's output while validating


class WorkflowError(ConfigError):
    """A workflow file is malformed; ``task`` names the task (when one is at fault), ``field`` the field."""

    def __init__(
        self,
        message: str,
        *,
        task: str | None = None,
        field: str | None = None,
        value: object = None,
        hint: str | None = None,
    ):
        self.task = task
        super().__init__(message, field=field, value=value, hint=hint)


# ---------------------------------------------------------------------------------------------
# Results


def public_pool_info(pool: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A call's ``pool`` dict without the instance URL (which may carry credentials)."""
    if pool is None:
        return None
    return {k: v for k, v in pool.items() if k != "instance_url"}


def response_of(method: str, output: Mapping[str, Any]) -> Any:
    """The useful part of an ``execute()`` result: the reply text, or the embeddings."""
    if method == "llm/chat":
        return (output.get("message") or {}).get("content", "")
    if method == "llm/generate":
        return output.get("response", "")
    return output.get("embeddings", [])


@dataclass
class TaskResult:
    """How one task ended: ``status`` is ``ok``, ``failed`` or ``skipped`` (a dependency did not succeed)."""

    name: str
    method: str
    status: str
    response: Any = None
    model: str | None = None
    pool: dict[str, Any] | None = None
    usage: dict[str, int | None] | None = None
    error: str | None = None
    duration: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "method": self.method,
            "model": self.model,
            "response": self.response,
            "error": self.error,
            "usage": self.usage,
            "pool": self.pool,
            "duration": None if self.duration is None else round(self.duration, 6),
        }


@dataclass
class WorkflowResult:
    """Every task's result, in the file's order."""

    name: str | None
    tasks: dict[str, TaskResult]
    duration: float

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tasks.values())

    @property
    def failed(self) -> list[str]:
        """Names of the tasks that failed or were skipped."""
        return [name for name, t in self.tasks.items() if not t.ok]

    def as_dict(self) -> dict[str, Any]:
        counts = {status: 0 for status in ("ok", "failed", "skipped")}
        for t in self.tasks.values():
            counts[t.status] += 1
        return {
            "workflow": self.name,
            "ok": self.ok,
            "summary": counts,
            "duration": round(self.duration, 6),
            "tasks": {name: t.as_dict() for name, t in self.tasks.items()},
        }


# ---------------------------------------------------------------------------------------------
# The workflow


@dataclass(frozen=True)
class WorkflowTask:
    """One validated task; ``params`` has its variables filled in, ``${tasks...}`` references remain."""

    name: str
    method: str
    params: Mapping[str, Any]
    depends_on: tuple[str, ...] = ()
    index: int = 0


@dataclass
class Workflow:
    """A validated workflow; :meth:`load` reads one, :meth:`run` runs it."""

    tasks: list[WorkflowTask]
    name: str | None = None
    providers: Mapping[str, Any] | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    source: str = "workflow"
    path: Path | None = None

    @classmethod
    def load(
        cls, source: str | os.PathLike[str] | Mapping[str, Any], variables: Mapping[str, Any] | None = None
    ) -> Workflow:
        """Read and validate a workflow from a YAML file or a mapping; ``variables`` override the file's."""
        if isinstance(source, Mapping):
            return cls.from_dict(source, variables)
        path = Path(source)
        document = read_yaml(path, what="workflow file", error=WorkflowError, field="workflow")
        return cls.from_dict(document.data, variables, source=str(source), path=path, lines=document)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        variables: Mapping[str, Any] | None = None,
        *,
        source: str = "workflow",
        path: Path | None = None,
        lines: YamlFile | None = None,
    ) -> Workflow:
        """Validate a workflow mapping (see the module docstring for the format)."""
        return _Parser(source, lines).workflow(data, dict(variables or {}), path)

    def pool_config(self) -> PoolConfig | None:
        """The pool of the workflow's ``providers:`` section, or None when it has none."""
        if self.providers is None:
            return None
        from gleitzeit_llm.config import PoolConfig

        if self.path is not None:
            return PoolConfig.from_yaml(self.path)  # errors then point at the file's lines
        return PoolConfig.from_dict({"providers": self.providers})

    async def run(
        self, pool: OllamaPoolProvider | None = None, *, max_concurrent: int | None = None
    ) -> WorkflowResult:
        """Run every task; independent ones at once, at most ``max_concurrent`` in flight.

        ``pool`` defaults to a pool built from the workflow's ``providers:`` (or the environment),
        opened and closed here. ``max_concurrent`` defaults to the pool's capacity (the sum of
        the instances' ``max_concurrent``). Task failures are results, not exceptions.
        """
        if pool is None:
            from gleitzeit_llm.config import PoolConfig
            from gleitzeit_llm.provider import OllamaPoolProvider

            async with OllamaPoolProvider(config=self.pool_config() or PoolConfig.load(None)) as own:
                return await self.run(own, max_concurrent=max_concurrent)
        if max_concurrent is None:
            max_concurrent = sum(i.max_concurrent for i in pool.manager.instances if not i.removed) or 1
        elif max_concurrent < 1:
            raise RequestError(
                f"max_concurrent must be at least 1, got {max_concurrent}", field="max_concurrent"
            )
        gate = asyncio.Semaphore(max_concurrent)
        started = time.monotonic()
        runs: dict[str, asyncio.Task[TaskResult]] = {}

        async def one(task: WorkflowTask) -> TaskResult:
            deps = [await runs[name] for name in task.depends_on]
            blocked = [d.name for d in deps if not d.ok]
            if blocked:
                return TaskResult(
                    task.name,
                    task.method,
                    "skipped",
                    error=f"skipped: dependency {', '.join(map(repr, blocked))} did not succeed",
                )
            outputs = {d.name: d for d in deps}
            params = _fill(task.params, lambda ref: _task_output(ref, outputs))
            async with gate:
                begun = time.monotonic()
                try:
                    output = await pool.execute(task.method, params)
                except GleitzeitError as exc:
                    return TaskResult(
                        task.name,
                        task.method,
                        "failed",
                        model=params.get("model"),
                        error=f"{type(exc).__name__}: {exc}",
                        duration=time.monotonic() - begun,
                    )
            return TaskResult(
                task.name,
                task.method,
                "ok",
                response=response_of(task.method, output),
                model=output.get("model", params.get("model")),
                pool=public_pool_info(output.get("pool")),
                usage={
                    "prompt_tokens": output.get("prompt_eval_count"),
                    "output_tokens": output.get("eval_count"),
                },
                duration=time.monotonic() - begun,
            )

        for task in self.tasks:  # topological order: dependencies exist before their dependents
            runs[task.name] = asyncio.ensure_future(one(task))
        try:
            results = await asyncio.gather(*runs.values())
        finally:
            for run in runs.values():
                run.cancel()
        by_index = sorted(zip(self.tasks, results, strict=True), key=lambda pair: pair[0].index)
        return WorkflowResult(
            self.name, {task.name: result for task, result in by_index}, time.monotonic() - started
        )


def _task_output(ref: tuple[str, str], outputs: Mapping[str, TaskResult]) -> str:
    name, _ = ref
    response = outputs[name].response
    return response if isinstance(response, str) else json.dumps(response)


# ---------------------------------------------------------------------------------------------
# Placeholders


def _fill(value: Any, resolve: Any, *, final: bool = True) -> Any:
    """``value`` with every placeholder replaced; ``resolve(key)`` answers variables (a str key)
    and task references (a ``(task, field)`` tuple). A string that is one placeholder keeps the
    answer's type. ``final=False`` keeps ``$${`` escaped, for a later pass."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole is not None and whole.group(1) is not None:
            return resolve(_parse_placeholder(whole.group(1)))

        def one(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "${" if final else "$${"
            answer = resolve(_parse_placeholder(match.group(1)))
            return answer if isinstance(answer, str) else json.dumps(answer)

        return _PLACEHOLDER.sub(one, value)
    if isinstance(value, Mapping):
        return {k: _fill(v, resolve, final=final) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, resolve, final=final) for v in value]
    return value


def _escape(value: Any) -> Any:
    """A variable's value as literal text for a later pass (its ``${`` is not a placeholder)."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, Mapping):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _parse_placeholder(inner: str) -> str | tuple[str, str]:
    text = inner.strip()
    ref = _TASK_REF.fullmatch(text)
    if ref is not None:
        return ref.group(1).strip(), ref.group(2)
    return text


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def _path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


@dataclass
class _Parser:
    source: str
    lines: YamlFile | None

    def fail(
        self,
        where: Sequence[str | int],
        text: str,
        *,
        task: str | None = None,
        hint: str | None = None,
        value: object = None,
    ) -> WorkflowError:
        """An error at ``where`` (a path from the document root), naming the task and field."""
        line = self.lines.line(where) if self.lines is not None else None
        prefix = f"{self.source}" + (f", line {line}" if line else "")
        task_path = list(where[2:]) if len(where) > 2 and where[0] == "tasks" else []
        field_name = _path(task_path) if task is not None and task_path else _path(where) or None
        subject = f"task {task!r}" if task is not None else None
        if subject and field_name:
            message = f"{prefix}: {subject}: {field_name}: {text}"
        elif subject:
            message = f"{prefix}: {subject}: {text}"
        else:
            message = f"{prefix}: {field_name}: {text}" if field_name else f"{prefix}: {text}"
        if hint:
            message += f"; {hint}"
        return WorkflowError(message, task=task, field=field_name, value=value, hint=hint)

    def workflow(self, data: Any, overrides: dict[str, Any], path: Path | None) -> Workflow:
        if not isinstance(data, Mapping):
            raise self.fail((), "expected a mapping with tasks: (and providers:, variables:)")
        self.unknown_keys(data, _TOP_KEYS, ())
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise self.fail(("name",), "expected a string", value=name)
        providers = data.get("providers")
        if providers is not None and not isinstance(providers, Mapping):
            raise self.fail(("providers",), "expected a mapping of name to provider")
        defaults = data.get("variables") or {}
        if not isinstance(defaults, Mapping) or not all(isinstance(k, str) for k in defaults):
            raise self.fail(("variables",), "expected a mapping of variable name to value")
        variables = {**defaults, **overrides}
        for key in variables:
            if not _VARIABLE.fullmatch(key):
                raise self.fail(
                    ("variables",), f"invalid variable name {key!r}", hint="letters, digits and _"
                )
        raw_tasks = data.get("tasks")
        if not isinstance(raw_tasks, list) or not raw_tasks:
            raise self.fail(
                ("tasks",),
                "required: a non-empty list of tasks",
                hint="e.g. tasks: [{name: ..., params: ...}]",
            )
        names = self.task_names(raw_tasks)
        tasks = [self.task(i, raw, names, variables) for i, raw in enumerate(raw_tasks)]
        return Workflow(
            tasks=self.ordered(tasks),
            name=name,
            providers=providers,
            variables=variables,
            source=self.source,
            path=path,
        )

    def unknown_keys(
        self,
        data: Mapping[str, Any],
        valid: Sequence[str],
        where: tuple[str | int, ...],
        task: str | None = None,
    ) -> None:
        for key in data:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                text = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
                raise self.fail((*where, str(key)), text, task=task, hint=f"valid fields: {', '.join(valid)}")

    def task_names(self, raw_tasks: list[Any]) -> dict[str, int]:
        names: dict[str, int] = {}
        for i, raw in enumerate(raw_tasks):
            if not isinstance(raw, Mapping):
                raise self.fail(("tasks", i), "expected a mapping with name, method and params")
            name = raw.get("name")
            if not isinstance(name, str) or not name.strip():
                raise self.fail(("tasks", i, "name"), "required: a non-empty string", value=name)
            if name in names:
                raise self.fail(
                    ("tasks", i, "name"),
                    f"task name {name!r} is used twice (tasks[{names[name]}] and tasks[{i}])",
                    task=name,
                    hint="names must be unique",
                )
            names[name] = i
        return names

    def task(
        self, i: int, raw: Mapping[str, Any], names: Mapping[str, int], variables: Mapping[str, Any]
    ) -> WorkflowTask:
        name: str = raw["name"]
        at: tuple[str | int, ...] = ("tasks", i)
        self.unknown_keys(raw, _TASK_KEYS, at, task=name)
        protocol = raw.get("protocol", PROTOCOL)
        if protocol != PROTOCOL:
            raise self.fail(
                (*at, "protocol"), f"unsupported protocol {protocol!r}", task=name, hint=f"use {PROTOCOL}"
            )
        method = raw.get("method", "llm/chat")
        if method not in METHODS:
            raise self.fail(
                (*at, "method"), f"unknown method {method!r}", task=name, hint=f"valid: {', '.join(METHODS)}"
            )
        params = raw.get("params")
        if not isinstance(params, Mapping):
            raise self.fail((*at, "params"), "required: a mapping (model, messages, ...)", task=name)
        depends = raw.get("depends_on") or []
        if isinstance(depends, str):
            depends = [depends]
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise self.fail((*at, "depends_on"), "expected a list of task names", task=name)
        deps: list[str] = []
        for dep in depends:
            self.check_dependency(at, "depends_on", name, dep, names)
            deps.append(dep)
        filled = self.fill_variables(at, name, params, variables, names, deps)
        self.validate_params(at, name, method, filled)
        return WorkflowTask(name, method, filled, tuple(dict.fromkeys(deps)), i)

    def check_dependency(
        self, at: tuple[str | int, ...], where: str, name: str, dep: str, names: Mapping[str, int]
    ) -> None:
        if dep == name:
            raise self.fail((*at, where), "a task cannot depend on itself", task=name)
        if dep not in names:
            close = difflib.get_close_matches(dep, list(names), n=1)
            raise self.fail(
                (*at, where),
                f"no task named {dep!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                task=name,
            )

    def fill_variables(
        self,
        at: tuple[str | int, ...],
        name: str,
        params: Mapping[str, Any],
        variables: Mapping[str, Any],
        names: Mapping[str, int],
        deps: list[str],
    ) -> dict[str, Any]:
        """Variables filled in; task references checked (and added to ``deps``) but kept."""

        def walk(value: Any, where: tuple[str | int, ...]) -> Any:
            if isinstance(value, Mapping):
                return {k: walk(v, (*where, str(k))) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v, (*where, j)) for j, v in enumerate(value)]
            if not isinstance(value, str):
                return value

            def resolve(key: str | tuple[str, str]) -> Any:
                if isinstance(key, tuple):
                    task_name, field_name = key
                    if field_name not in _TEXT_FIELD:
                        raise self.fail(
                            (*at, *where),
                            f"${{tasks.{task_name}.{field_name}}}: unknown output field {field_name!r}",
                            task=name,
                            hint=f"valid: {', '.join(_TEXT_FIELD)}",
                        )
                    self.check_dependency(at, _path(where), name, task_name, names)
                    deps.append(task_name)
                    return "${tasks." + task_name + "." + field_name + "}"
                if not _VARIABLE.fullmatch(key):
                    raise self.fail(
                        (*at, *where),
                        f"invalid placeholder ${{{key}}}",
                        task=name,
                        hint="write ${name}, ${tasks.NAME.response}, or $${ for a literal ${",
                    )
                if key not in variables:
                    raise self.fail(
                        (*at, *where),
                        f"undefined variable ${{{key}}}",
                        task=name,
                        hint=f"pass --var {key}=... or define it under variables:",
                    )
                return _escape(variables[key])

            return _fill(value, resolve, final=False)

        filled: dict[str, Any] = walk(params, ("params",))
        return filled

    def validate_params(
        self, at: tuple[str | int, ...], name: str, method: str, params: dict[str, Any]
    ) -> None:
        """Check the request and routing hints as the pool will, before anything runs."""
        where = (*at, "params")
        model = params.get("model")
        if not isinstance(model, str) or not model.strip():
            raise self.fail((*where, "model"), "required: a model name", task=name, value=model)
        needed = _INPUT_FIELD[method]
        if method == "llm/chat" and "messages" not in params and "prompt" in params:
            needed = "prompt"
        if needed not in params:
            raise self.fail((*where, needed), f"required for {method}", task=name)
        _coerce_hints(params)
        try:
            validate_request(method, _fill(params, lambda key: _PENDING))  # dependency outputs unknown yet
        except (RequestError, ConfigError) as exc:
            field_name = getattr(exc, "field", None) or ""
            text = str(exc)
            if text.startswith("invalid ") and ": " in text:  # "invalid chat request: ..."
                text = text.split(": ", 1)[1]
            for lead in (f"{field_name} = ", f"{field_name}: ", f"{field_name} "):
                if field_name and text.startswith(lead):
                    text = text[len(lead) :]
                    break
            raise self.fail(
                (*where, *field_name.split(".")) if field_name else where, text, task=name
            ) from None

    def ordered(self, tasks: list[WorkflowTask]) -> list[WorkflowTask]:
        """Tasks in an order where every dependency comes first; a cycle is an error."""
        by_name = {t.name: t for t in tasks}
        order: list[WorkflowTask] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(task: WorkflowTask, chain: list[str]) -> None:
            mark = state.get(task.name)
            if mark == 2:
                return
            if mark == 1:
                cycle = [*chain[chain.index(task.name) :], task.name]
                raise self.fail(
                    ("tasks", task.index, "depends_on"),
                    f"dependency cycle: {' -> '.join(cycle)}",
                    task=task.name,
                )
            state[task.name] = 1
            for dep in task.depends_on:
                visit(by_name[dep], [*chain, task.name])
            state[task.name] = 2
            order.append(task)

        for task in tasks:
            visit(task, [])
        return order


def validate_request(method: str, params: Mapping[str, Any]) -> None:
    """Check ``execute(method, params)``'s request and routing hints as the pool will, without
    sending anything; raises :class:`RequestError` naming the field."""
    from gleitzeit_llm.hints import RoutingHints
    from gleitzeit_llm.ollama.models import ChatRequest, EmbedRequest, GenerateRequest

    if method not in METHODS:
        raise RequestError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}", field="method")
    body = dict(params)
    if method == "llm/chat" and "prompt" in body and "messages" not in body:
        body["messages"] = [{"role": "user", "content": body.pop("prompt")}]
    RoutingHints.pop_from(body)  # the provider's own check, so what passes here routes there
    body.pop("stream", None)
    {"llm/chat": ChatRequest, "llm/generate": GenerateRequest, "llm/embed": EmbedRequest}[method].coerce(body)


def _coerce_hints(params: dict[str, Any]) -> None:
    """Routing hints written as text (``--var`` values are strings) in their types."""
    latency = params.get("max_latency")
    if isinstance(latency, str):
        try:
            params["max_latency"] = float(latency.strip())
        except ValueError:
            pass  # validation reports it
    gpu = params.get("require_gpu")
    if isinstance(gpu, str) and gpu.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        params["require_gpu"] = gpu.strip().lower() in ("true", "yes", "1")
    tags = params.get("instance_tags")
    if isinstance(tags, str):
        params["instance_tags"] = [t.strip() for t in tags.split(",") if t.strip()]
