"""LlamaIndex LLM integration for gleitzeit-llm: one pool of Ollama servers behind one LLM.

``OllamaPool`` is a drop-in for ``llama_index.llms.ollama.Ollama``; ``PrometheusEventHandler``
records its calls (and OllamaPoolEmbedding's) as Prometheus metrics. Names load on first use, so
importing this package stays cheap and ``prometheus_client`` is only imported with the handler.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_index.llms.gleitzeit.base import OllamaPool
    from llama_index.llms.gleitzeit.prometheus import PrometheusEventHandler

__all__ = ["OllamaPool", "PrometheusEventHandler"]

_LAZY = {
    "OllamaPool": "llama_index.llms.gleitzeit.base",
    "PrometheusEventHandler": "llama_index.llms.gleitzeit.prometheus",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
