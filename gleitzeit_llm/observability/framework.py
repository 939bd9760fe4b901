"""Per-call bookkeeping shared by the framework handlers (LangChain callbacks, LlamaIndex events).

A framework tells a handler that a call started, that a chunk arrived and that the call ended or
failed, each time with its own key (LangChain's run id, LlamaIndex's span id). The handler turns
those into :class:`CallTracker` calls; the tracker keeps the open calls, times them (start, first
chunk, gaps between chunks) and records each finished call once through
:class:`~gleitzeit_llm.observability.metrics.CallMetrics`, reading the pool's facts (serving
instance, attempts, fallback model) from the ``pool`` mapping the adapters put into responses.
So both frameworks produce the same series with the same meaning, and the handlers only translate
their framework's shapes.

Framework-neutral: nothing here imports LangChain or LlamaIndex. Requires ``prometheus-client``
(``pip install gleitzeit-llm[prometheus]``), as :mod:`~gleitzeit_llm.observability.metrics` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.errors import AllInstancesFailedError
from gleitzeit_llm.observability.metrics import CallMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["CallTracker", "OpenCall", "pool_of"]


class OpenCall:
    """One call between its start and its end: what it asked for and when its chunks came."""

    __slots__ = ("first_chunk", "instance", "last_chunk", "model", "operation", "started")

    def __init__(self, operation: str, model: str) -> None:
        self.operation = operation
        self.model = model
        self.started = time.monotonic()
        self.first_chunk: float | None = None
        self.last_chunk: float | None = None
        # The serving instance, once a chunk has named it (the end names it again).
        self.instance: str | None = None

    def time_to_first_chunk(self) -> float | None:
        return None if self.first_chunk is None else self.first_chunk - self.started


class CallTracker:
    """The open calls of one handler, keyed by the framework's run or span id, and their metrics.

    Thread-safe: frameworks report from many threads and tasks at once. The lock covers only the
    table of open calls; metrics are recorded outside it.
    """

    __slots__ = ("_lock", "_open", "metrics")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.metrics = CallMetrics.on(registry)
        self._open: dict[Hashable, OpenCall] = {}
        self._lock = threading.Lock()

    def start(self, key: Hashable, operation: str, model: str, *, keep_at_most: int | None = None) -> None:
        """Open a call; with ``keep_at_most``, the oldest open calls beyond it are forgotten
        (streams that are never read to the end must not grow the table without bound)."""
        with self._lock:
            self._open[key] = OpenCall(operation, model)
            if keep_at_most is not None:
                while len(self._open) > keep_at_most:
                    del self._open[next(iter(self._open))]  # dicts keep insertion order: the oldest

    def chunk(self, key: Hashable, response: Any = None, *, record_gap: bool = True) -> None:
        """A chunk of an open call arrived. ``response`` (a mapping or an object with ``pool``)
        is read for the serving instance until one is known; ``record_gap=False`` skips the
        per-chunk histogram."""
        now = time.monotonic()
        with self._lock:
            call = self._open.get(key)
            if call is None:
                return
            previous, call.last_chunk = call.last_chunk, now
            if call.first_chunk is None:
                call.first_chunk = now
            if call.instance is None and response is not None:
                call.instance = pool_of(response).get("instance_id")
        if previous is not None and record_gap:
            self.metrics.record_chunk_gap(
                operation=call.operation, model=call.model, instance=call.instance, gap=now - previous
            )

    def pop(self, key: Hashable) -> OpenCall | None:
        """Close a call: the open call, or None when it was never opened (another provider's
        run, or one forgotten)."""
        with self._lock:
            return self._open.pop(key, None)

    def record_success(
        self,
        call: OpenCall,
        pool: Mapping[str, Any],
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Record a popped call that ended well; ``pool`` is the response's pool facts and
        ``model`` overrides the model the call started with."""
        self.metrics.record_call(
            operation=call.operation,
            model=model or call.model,
            duration=time.monotonic() - call.started,
            instance=pool.get("instance_id") or call.instance,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            time_to_first_chunk=call.time_to_first_chunk(),
            attempts=pool.get("attempts"),
            fallback_model=pool.get("model") if pool.get("fallback_used") else None,
        )

    def fail(self, key: Hashable, error: BaseException | str) -> None:
        """Close and record a call that raised ``error`` (or, as a string, an error class name)."""
        call = self.pop(key)
        if call is None:
            return
        instance = getattr(error, "instance", None)
        attempts = len(error.errors) if isinstance(error, AllInstancesFailedError) and error.errors else None
        self.metrics.record_call(
            operation=call.operation,
            model=call.model,
            duration=time.monotonic() - call.started,
            instance=instance if isinstance(instance, str) else call.instance,
            error=error,
            time_to_first_chunk=call.time_to_first_chunk(),
            attempts=attempts,
        )

    def __repr__(self) -> str:
        return f"CallTracker(registry={self.metrics.registry!r})"


def pool_of(response: Any) -> Mapping[str, Any]:
    """The pool facts (``instance_id``, ``attempts``, ``fallback_used``, ``model``, ...) an adapter
    put into a response under ``pool``: from a mapping or an attribute, ``{}`` when absent."""
    pool = response.get("pool") if isinstance(response, Mapping) else getattr(response, "pool", None)
    return pool if isinstance(pool, Mapping) else {}
