"""LlamaIndex LLM integration for gleitzeit-llm: one pool of Ollama servers behind one LLM.

``OllamaPool`` is a drop-in for ``llama_index.llms.ollama.Ollama``; ``PrometheusEventHandler``
records its calls (and OllamaPoolEmbedding's) as Prometheus metrics. Names load on first use, so
importing this package stays cheap and ``prometheus_client`` is only imported with the handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gleitzeit_llm.lazy import lazy_exports

if TYPE_CHECKING:
    from llama_index.llms.gleitzeit.base import OllamaPool
    from llama_index.llms.gleitzeit.prometheus import PrometheusEventHandler

__all__ = ["OllamaPool", "PrometheusEventHandler"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "OllamaPool": "llama_index.llms.gleitzeit.base",
        "PrometheusEventHandler": "llama_index.llms.gleitzeit.prometheus",
    },
)
