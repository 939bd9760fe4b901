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
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gleitzeit_llm.errors import AllInstancesFailedError
from gleitzeit_llm.observability.metrics import CallMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["CallTracker", "OpenCall", "pool_of", "server_of"]


#: Chunk gaps an open call holds while its serving instance is unknown (they are recorded under
#: the instance once it is known, at the end at the latest); beyond it they are recorded at once.
MAX_HELD_GAPS = 4096


class OpenCall:
    """One call between its start and its end: what it asked for, where it ran, when its chunks came."""

    __slots__ = (
        "first_chunk",
        "gaps",
        "instance",
        "last_chunk",
        "model",
        "operation",
        "response_model",
        "server",
        "started",
    )

    def __init__(self, operation: str, model: str, server_url: str | None = None) -> None:
        self.operation = operation
        self.model = model
        self.started = time.monotonic()
        self.first_chunk: float | None = None
        self.last_chunk: float | None = None
        # The serving instance, once a chunk has named it (the end names it again).
        self.instance: str | None = None
        self.response_model: str | None = None
        self.server: tuple[str, int | None] = server_of(server_url)
        # Gaps between chunks that came before the serving instance was known.
        self.gaps: list[float] = []

    def time_to_first_chunk(self) -> float | None:
        return None if self.first_chunk is None else self.first_chunk - self.started

    def learn(self, pool: Mapping[str, Any]) -> None:
        """Take the serving instance, its address and the answering model from a response's pool facts."""
        instance = pool.get("instance_id")
        if instance:
            self.instance = instance
            url = pool.get("instance_url")
            if url:
                self.server = server_of(url)
        if pool.get("model"):
            self.response_model = pool["model"]

    def labels(self) -> tuple[str, ...]:
        """The call's :data:`~gleitzeit_llm.observability.metrics.CALL_LABELS` values as known now."""
        address, port = self.server
        return CallMetrics.labels(
            self.operation, self.model, self.instance, self.response_model, address, port
        )


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

    def start(
        self,
        key: Hashable,
        operation: str,
        model: str,
        *,
        server_url: str | None = None,
        keep_at_most: int | None = None,
    ) -> None:
        """Open a call; ``server_url`` is the server the model was configured with, if any (the pool's
        facts name the serving one later). With ``keep_at_most``, the oldest open calls beyond it are
        forgotten (streams that are never read to the end must not grow the table without bound)."""
        call = OpenCall(operation, model, server_url)
        with self._lock:
            self._open[key] = call
            if keep_at_most is not None:
                while len(self._open) > keep_at_most:
                    del self._open[next(iter(self._open))]  # dicts keep insertion order: the oldest

    def chunk(self, key: Hashable, response: Any = None, *, record_gap: bool = True) -> None:
        """A chunk of an open call arrived. ``response`` (a mapping or an object with ``pool``)
        is read for the serving instance until one is known; ``record_gap=False`` skips the
        per-chunk histogram. Gaps wait in the call until the instance is known, so every gap of a
        call carries the same labels as its duration (LangChain names the instance only at the end)."""
        now = time.monotonic()
        with self._lock:
            call = self._open.get(key)
            if call is None:
                return
            previous, call.last_chunk = call.last_chunk, now
            if call.first_chunk is None:
                call.first_chunk = now
            if call.instance is None and response is not None:
                call.learn(pool_of(response))
            if previous is None or not record_gap:
                return
            gap = now - previous
            if call.instance is None and len(call.gaps) < MAX_HELD_GAPS:
                call.gaps.append(gap)
                return
            labels = call.labels()
        self.metrics.record_chunk_gaps(labels, (gap,))

    def is_open(self, key: Hashable) -> bool:
        """Whether a call is open under ``key``."""
        return key in self._open

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
        response_model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Record a popped call that ended well; ``pool`` is the response's pool facts, ``model``
        overrides the model the call started with and ``response_model`` is the model the response
        names (the pool's facts win: they name the fallback model when it answered)."""
        duration = time.monotonic() - call.started
        if response_model and not call.response_model:
            call.response_model = response_model
        call.learn(pool)
        if model:
            call.model = model
        self._record(
            call,
            duration,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            attempts=pool.get("attempts"),
            fallback_model=pool.get("model") if pool.get("fallback_used") else None,
        )

    def fail(self, key: Hashable, error: BaseException | str) -> None:
        """Close and record a call that raised ``error`` (or, as a string, an error class name)."""
        call = self.pop(key)
        if call is None:
            return
        duration = time.monotonic() - call.started
        instance = getattr(error, "instance", None)
        if isinstance(instance, str):
            call.instance = instance
        attempts = len(error.errors) if isinstance(error, AllInstancesFailedError) and error.errors else None
        self._record(call, duration, error=error, attempts=attempts)

    def _record(self, call: OpenCall, duration: float, **facts: Any) -> None:
        """Record a closed call under the labels known now: first its held chunk gaps, then itself."""
        if call.gaps:
            self.metrics.record_chunk_gaps(call.labels(), call.gaps)
            call.gaps = []
        address, port = call.server
        self.metrics.record_call(
            operation=call.operation,
            model=call.model,
            duration=duration,
            instance=call.instance,
            response_model=call.response_model,
            server_address=address,
            server_port=port,
            time_to_first_chunk=call.time_to_first_chunk(),
            **facts,
        )

    def __repr__(self) -> str:
        return f"CallTracker(registry={self.metrics.registry!r})"


def pool_of(response: Any) -> Mapping[str, Any]:
    """The pool facts (``instance_id``, ``attempts``, ``fallback_used``, ``model``, ...) an adapter
    put into a response under ``pool``: from a mapping or an attribute, ``{}`` when absent."""
    pool = response.get("pool") if isinstance(response, Mapping) else getattr(response, "pool", None)
    return pool if isinstance(pool, Mapping) else {}


_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=256)
def server_of(url: str | None) -> tuple[str, int | None]:
    """``(server_address, server_port)`` of a server URL, as the GenAI conventions' ``server.*``
    attributes: the host and the port (the scheme's when the URL names none); never credentials,
    paths or queries. ``("", None)`` when unknown."""
    if not url:
        return "", None
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port
    except ValueError:
        return "", None
    return parts.hostname or "", port if port is not None else _DEFAULT_PORTS.get(parts.scheme)
