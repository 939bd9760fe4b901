"""Call keywords that LlamaIndex's core components and other LLMs' users pass to any LLM, but that
Ollama has no use for: ``OllamaPool`` drops them with one warning per name, as ``Ollama`` drops
them (silently), instead of failing the call."""

from __future__ import annotations

import warnings
from collections.abc import MutableMapping
from typing import Any

__all__ = ["UNUSED_KWARGS", "drop_unused", "forget_warnings"]

#: Keywords other LlamaIndex LLMs accept per call and Ollama has no counterpart for:
#: ``DocumentContextExtractor`` sends ``extra_headers`` (with ``max_tokens``, which becomes
#: ``num_predict``); function-calling programs pass the tool-choice settings through ``llm_kwargs``.
UNUSED_KWARGS = frozenset(
    {
        "extra_headers",
        "extra_body",
        "extra_query",
        "tool_choice",
        "tool_required",
        "allow_parallel_tool_calls",
        "parallel_tool_calls",
        "strict",
    }
)

_warned: set[str] = set()


def drop_unused(given: MutableMapping[str, Any]) -> None:
    """Remove the :data:`UNUSED_KWARGS` from ``given``, warning once per process and name."""
    for name in UNUSED_KWARGS.intersection(given):
        del given[name]
        if name not in _warned:
            _warned.add(name)
            warnings.warn(
                f"OllamaPool ignores {name}=: Ollama has no use for it (warned once)",
                UserWarning,
                stacklevel=2,
            )


def forget_warnings() -> None:
    """Warn again about every name (for tests)."""
    _warned.clear()
