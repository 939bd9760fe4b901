"""What ``/api/show`` says of a model's context window, through the provider (``provider.show``)."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from gleitzeit_llm.blocking import run_blocking
from gleitzeit_llm.errors import GleitzeitError
from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["FAILURE_TTL", "acontext_length", "cached_context_length", "context_length"]

# After a failed lookup, calls use the default context window for this many seconds before
# /api/show is asked again (the provider keeps answers, not failures).
FAILURE_TTL = 30.0

_failed: weakref.WeakKeyDictionary[OllamaPoolProvider, dict[str, float]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def cached_context_length(provider: OllamaPoolProvider, model: str) -> int | None:
    """The model's context length if the pool has ``/api/show``'s answer already (no I/O)."""
    shown = provider.show_cached(model)
    return _context_length(shown.model_info) if shown is not None else None


def _context_length(model_info: dict[str, Any] | None) -> int | None:
    """The first ``model_info`` key with ``context_length`` in it, as ``Ollama.get_context_window``
    reads it: ``<general.architecture>.context_length`` on Ollama, and found where a compatible
    server leaves the architecture out."""
    for key, value in (model_info or {}).items():
        if "context_length" in key:
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


def _may_ask(provider: OllamaPoolProvider, model: str) -> bool:
    """No answer kept, and no lookup failed within FAILURE_TTL."""
    if provider.show_cached(model) is not None:
        return False
    with _lock:
        failed_at = _failed.get(provider, {}).get(model)
    return failed_at is None or time.monotonic() - failed_at >= FAILURE_TTL


@contextlib.contextmanager
def _failure_noted(provider: OllamaPoolProvider, model: str) -> Iterator[None]:
    try:
        yield
    except GleitzeitError:  # no instance answered: the default context window it is, for now
        with _lock:
            _failed.setdefault(provider, {})[model] = time.monotonic()


def context_length(provider: OllamaPoolProvider, model: str) -> int | None:
    """The model's context length from ``/api/show`` (asked once per model and pool); ``None``
    when no instance answered. On an event-loop thread the lookup runs in a worker thread."""
    if _may_ask(provider, model):
        with _failure_noted(provider, model):
            run_blocking(provider.show_sync, model)
    return cached_context_length(provider, model)


async def acontext_length(provider: OllamaPoolProvider, model: str) -> int | None:
    """Async twin of :func:`context_length`."""
    if _may_ask(provider, model):
        with _failure_noted(provider, model):
            await provider.show(model)
    return cached_context_length(provider, model)
