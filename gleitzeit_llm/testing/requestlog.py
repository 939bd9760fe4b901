"""The request log: what each request to an emulator asked for and what happened to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RequestLog", "RequestRecord"]


@dataclass
class RequestRecord:
    """One request, appended on arrival and completed when the response ends.

    Durations are modelled nanoseconds (what the response reported); ``wall_time`` is real
    seconds. Fields that do not apply stay ``None``.
    """

    id: int
    method: str
    path: str
    #: Wall-clock arrival (Unix seconds).
    started_at: float
    headers: dict[str, str] = field(default_factory=dict)
    #: The decoded JSON body (``None`` for GET/HEAD or an undecodable body).
    body: Any = None
    #: The model string as sent, and its ``name:tag`` form.
    model: str | None = None
    model_name: str | None = None
    stream: bool | None = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None
    format: Any = None
    keep_alive: Any = None
    tools: bool = False
    #: Requests generating on this server / for this model when this one started (itself included).
    concurrency: int | None = None
    model_concurrency: int | None = None
    #: Whether the model had to be loaded (or the request waited for its load).
    cold_load: bool = False
    #: ``"load"``/``"unload"`` for the load/unload helpers, else ``None``.
    action: str | None = None
    #: Which fault shaped the answer: error, busy, hang, hang_mid_stream, drop, error_line.
    fault: str | None = None
    status: int | None = None
    error: str | None = None
    done_reason: str | None = None
    #: NDJSON lines written (streams).
    chunks: int = 0
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    #: Modelled nanoseconds waiting for a free slot (``total - load - prompt_eval - eval``, less
    #: the server's own overhead of a millisecond or two).
    queue_duration: int | None = None
    #: Prompt tokens found in the runner's prompt cache (not evaluated again; Ollama reports them
    #: only through a shorter ``prompt_eval_duration``) and the cache slot the request used.
    cached_tokens: int | None = None
    cache_slot: int | None = None
    prompt_eval_duration: int | None = None
    eval_duration: int | None = None
    #: The client went away before the response ended.
    cancelled: bool = False
    finished: bool = False
    wall_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (used by the admin API)."""
        return asdict(self)


class RequestLog:
    """Records, shared between the server thread (writes) and test threads (reads, waits)."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._next_id = 1
        # Re-entrant: wait_for predicates may read the log (and so take the lock) themselves.
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self._version = 0

    def start(self, method: str, path: str, started_at: float, headers: dict[str, str]) -> RequestRecord:
        with self._lock:
            record = RequestRecord(
                id=self._next_id, method=method, path=path, started_at=started_at, headers=headers
            )
            self._next_id += 1
            self._records.append(record)
            self._version += 1
            self.changed.notify_all()
        return record

    def notify(self) -> None:
        """Wake :meth:`wait_for` callers after a record or the server state changed."""
        with self._lock:
            self._version += 1
            self.changed.notify_all()

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._version += 1
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` is true (re-checked on every change) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = self._version
            # The predicate runs without the lock: it may read the server's state freely.
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._lock:
                if self._version == seen:
                    # A short poll also catches state that changed without a notification.
                    self.changed.wait(min(remaining, 0.05))
