"""LangChain integration for gleitzeit-llm: one pool of Ollama servers behind LangChain's interfaces.

* :class:`ChatOllamaPool`: a drop-in for ``langchain_ollama.ChatOllama`` that spreads calls over
  the pool (failover, fallback model, routing hints per call).
* :class:`OllamaPoolEmbeddings`: a drop-in for ``OllamaEmbeddings``; large inputs are embedded
  in parallel batches across the pool.
* :class:`PrometheusCallbackHandler`: per-call metrics under the OpenTelemetry GenAI names
  (needs ``prometheus-client``).

Classes are imported on first use, so ``import langchain_gleitzeit`` stays cheap and never
imports ``prometheus_client`` unless the handler is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gleitzeit_llm.lazy import lazy_exports

if TYPE_CHECKING:
    from langchain_gleitzeit.callbacks import PrometheusCallbackHandler
    from langchain_gleitzeit.chat_models import ChatOllamaPool
    from langchain_gleitzeit.embeddings import OllamaPoolEmbeddings

__all__ = ["ChatOllamaPool", "OllamaPoolEmbeddings", "PrometheusCallbackHandler", "__version__"]

__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ChatOllamaPool": "langchain_gleitzeit.chat_models",
        "OllamaPoolEmbeddings": "langchain_gleitzeit.embeddings",
        "PrometheusCallbackHandler": "langchain_gleitzeit.callbacks",
    },
)
