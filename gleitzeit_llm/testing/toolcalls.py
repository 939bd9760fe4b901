"""Scripted tool calls: what the next chat request with ``tools`` answers (thread-safe)."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from gleitzeit_llm.testing.generation import GenerationRequest, value_for_schema

__all__ = ["ToolCallSpec", "ToolScripts"]

#: A scripted call: a tool name, or ``{"name": ..., "arguments": {...}}`` (OpenAI's
#: ``{"function": {...}}`` wrapper accepted).
ToolCallSpec = str | Mapping[str, Any]


class ToolScripts:
    """Queued one-shot scripts and an optional persistent default (see
    :meth:`~gleitzeit_llm.testing.OllamaEmulator.script_tool_calls`)."""

    def __init__(self) -> None:
        self._scripts: collections.deque[list[dict[str, Any]]] = collections.deque()
        self._default: list[dict[str, Any]] | None = None
        # Test threads script calls while the server loop takes them.
        self._lock = threading.Lock()

    def script(self, calls: Sequence[ToolCallSpec], *, persistent: bool = False) -> None:
        """Queue ``calls`` for the next request with tools (or make them the default)."""
        script = [_tool_call_spec(call) for call in calls]
        with self._lock:
            if persistent:
                self._default = script
            else:
                self._scripts.append(script)

    def clear(self) -> None:
        """Forget scripted and default tool calls."""
        with self._lock:
            self._scripts.clear()
            self._default = None

    def take(self, request: GenerationRequest) -> list[dict[str, Any]] | None:
        """The calls ``request`` answers with (arguments filled in), or None for a text reply."""
        with self._lock:
            if self._scripts:
                script = self._scripts.popleft()
            elif self._default is not None and not _answers_tool(request):
                script = self._default
            else:
                return None
        return [_fill_arguments(call, request, index) for index, call in enumerate(script)]


def _tool_call_spec(call: ToolCallSpec) -> dict[str, Any]:
    if isinstance(call, str):
        return {"name": call}
    if "function" in call and isinstance(call["function"], Mapping):
        call = call["function"]
    if "name" not in call:
        raise ValueError(f"a scripted tool call needs a name: {call!r}")
    result: dict[str, Any] = {"name": call["name"]}
    if call.get("arguments") is not None:
        arguments = call["arguments"]
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        result["arguments"] = dict(arguments)
    return result


def _answers_tool(request: GenerationRequest) -> bool:
    return bool(request.messages) and request.messages[-1].get("role") == "tool"


def _fill_arguments(call: dict[str, Any], request: GenerationRequest, index: int) -> dict[str, Any]:
    if "arguments" in call:
        return call
    schema: Any = {"type": "object", "properties": {}}
    for tool in request.tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and function.get("name") == call["name"]:
            schema = function.get("parameters") or schema
    arguments = value_for_schema(schema, f"{request.prompt}\x1f{call['name']}\x1f{index}")
    return {"name": call["name"], "arguments": arguments if isinstance(arguments, dict) else {}}
