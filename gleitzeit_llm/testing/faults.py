"""Faults an emulated server can be told to show, switchable at run time from any thread."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["BUSY_MESSAGE", "DEFAULT_ERROR_MESSAGE", "DEFAULT_STREAM_ERROR", "FaultState", "Faults"]

#: What a crashed runner answers with on current servers (llama-server engine).
DEFAULT_ERROR_MESSAGE = "llama-server process has terminated: exit status 2"
#: The line a real server writes when generation fails after streaming began.
DEFAULT_STREAM_ERROR = "an error was encountered while running the model"
#: Ollama's 503 text; note the two spaces after "again.".
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


@dataclass(frozen=True)
class Faults:
    """A snapshot of the faults in force. All default to "healthy".

    Faults affect the inference routes (``/api/chat``, ``/api/generate``, ``/api/embed``,
    ``/api/embeddings``); with ``affect_probes=True`` the error, busy and hang faults also hit
    ``/``, ``/api/version``, ``/api/tags``, ``/api/ps`` and ``/api/show``. Latencies are
    modelled seconds, scaled by the emulator's ``time_scale`` like every other duration.
    """

    #: Probability (0..1) that a request fails with ``error_status``/``error_message``.
    error_rate: float = 0.0
    #: The next N requests fail (counts down; combined with ``error_rate``).
    fail_next: int = 0
    error_status: int = 500
    error_message: str = DEFAULT_ERROR_MESSAGE
    #: Hold every request before the first byte (no headers) until cleared or the client leaves.
    hang: bool = False
    #: Stop writing a stream after N lines and hold it open until cleared or the client leaves.
    hang_after_chunks: int | None = None
    #: Cut the connection after N NDJSON lines (before the ``done`` line at the latest).
    #: Non-streamed requests are cut before any response.
    drop_after_chunks: int | None = None
    #: Write ``{"error": ...}`` after N lines (status stays 200; a non-streamed request gets 500).
    error_after_chunks: int | None = None
    stream_error_message: str = DEFAULT_STREAM_ERROR
    #: Added to the time to first token (reported in ``prompt_eval_duration``).
    extra_latency: float = 0.0
    #: Multiplies prompt evaluation and token generation time (a slow node).
    slow_factor: float = 1.0
    #: Answer every request with 503 ``server busy, ...`` (a 503 storm).
    busy: bool = False
    #: The status of the ``busy`` answers: 503 as Ollama's scheduler sends, or 429 as a proxy might.
    busy_status: int = 503
    #: A ``Retry-After`` header (seconds) on the ``busy`` answers; none by default, like Ollama.
    busy_retry_after: float | None = None
    affect_probes: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (used by the admin API)."""
        return asdict(self)

    @property
    def active(self) -> bool:
        return self != Faults()


_FIELDS = {f.name for f in fields(Faults)}


class FaultState:
    """The mutable, lock-protected fault settings of one emulator, with a seeded RNG."""

    def __init__(self, seed: int | None = 0, on_change: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        self._rng = random.Random(seed)
        self._on_change = on_change

    @property
    def current(self) -> Faults:
        return self._faults

    def set(self, **changes: Any) -> Faults:
        """Change some faults; unknown names raise ``TypeError``."""
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
        with self._lock:
            self._faults = replace(self._faults, **changes)
            result = self._faults
        if self._on_change:
            self._on_change()
        return result

    def replace_all(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults
        if self._on_change:
            self._on_change()

    def clear(self) -> None:
        """Back to healthy."""
        self.replace_all(Faults())

    def seed(self, seed: int | None) -> None:
        """Re-seed the RNG behind ``error_rate`` (reproducible failure sequences)."""
        with self._lock:
            self._rng.seed(seed)

    def draw_error(self) -> tuple[int, str] | None:
        """Whether this request should fail (consumes ``fail_next`` and one RNG draw)."""
        with self._lock:
            faults = self._faults
            if faults.fail_next > 0:
                self._faults = replace(faults, fail_next=faults.fail_next - 1)
                return faults.error_status, faults.error_message
            if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
                return faults.error_status, faults.error_message
        return None
