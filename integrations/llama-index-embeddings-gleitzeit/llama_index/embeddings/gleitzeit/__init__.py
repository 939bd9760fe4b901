"""LlamaIndex embeddings integration for gleitzeit-llm: one pool of Ollama servers behind one model.

``OllamaPoolEmbedding`` is a drop-in for ``llama_index.embeddings.ollama.OllamaEmbedding`` that
spreads every batch over the pool. The name loads on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_index.embeddings.gleitzeit.base import OllamaPoolEmbedding

__all__ = ["OllamaPoolEmbedding"]


def __getattr__(name: str) -> Any:
    if name != "OllamaPoolEmbedding":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module("llama_index.embeddings.gleitzeit.base").OllamaPoolEmbedding
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
