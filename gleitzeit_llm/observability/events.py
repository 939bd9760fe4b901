"""Pool events: what the pool decided and saw, for logging, metrics and the framework handlers.

The pool emits; observers subscribe (the stamina model: instrumentation plugs in from outside)::

    pool.events.subscribe(lambda event: print(event.kind, event))

Observers run synchronously in the thread that emits, so they must be quick; an observer that
raises is logged and otherwise ignored, it never breaks a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

__all__ = [
    "BreakerStateChanged",
    "EventBus",
    "FailoverEvent",
    "FallbackEvent",
    "HealthStateChanged",
    "InstanceAdded",
    "InstanceRemoved",
    "PoolEvent",
    "RequestFinished",
    "RoutingDecision",
    "log_event",
]

logger = logging.getLogger("gleitzeit_llm")


@dataclass(frozen=True)
class PoolEvent:
    """Base of every event; ``kind`` names the event type in logs and handlers."""

    kind: ClassVar[str] = "event"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class RoutingDecision(PoolEvent):
    """An instance was chosen for a request."""

    kind: ClassVar[str] = "routing_decision"
    instance: str
    model: str | None
    strategy: str
    candidates: int
    attempt: int = 1
    reason: str = ""


@dataclass(frozen=True)
class FailoverEvent(PoolEvent):
    """A request failed on ``from_instance`` and is tried again elsewhere."""

    kind: ClassVar[str] = "failover"
    from_instance: str
    model: str | None
    error: str
    attempt: int


@dataclass(frozen=True)
class FallbackEvent(PoolEvent):
    """The requested model could not be served anywhere; the fallback model is used."""

    kind: ClassVar[str] = "fallback"
    model: str
    fallback_model: str
    reason: str


@dataclass(frozen=True)
class _StateChanged(PoolEvent):
    """An instance's state went from ``old`` to ``new`` (the enum values) for ``reason``."""

    instance: str
    old: str
    new: str
    reason: str


@dataclass(frozen=True)
class BreakerStateChanged(_StateChanged):
    """The instance's circuit breaker changed state (``closed``, ``open``, ``half_open``)."""

    kind: ClassVar[str] = "breaker_state_changed"


@dataclass(frozen=True)
class HealthStateChanged(_StateChanged):
    """The instance's health changed (``healthy``, ``degraded``, ``unhealthy``, ``unknown``)."""

    kind: ClassVar[str] = "health_state_changed"


@dataclass(frozen=True)
class InstanceAdded(PoolEvent):
    """An instance joined the pool at run time."""

    kind: ClassVar[str] = "instance_added"
    instance: str


@dataclass(frozen=True)
class InstanceRemoved(PoolEvent):
    """An instance left the pool; its ``in_flight`` requests still finish there."""

    kind: ClassVar[str] = "instance_removed"
    instance: str
    in_flight: int


@dataclass(frozen=True)
class RequestFinished(PoolEvent):
    """One attempt on one instance ended. ``outcome`` is ``success``, ``failure``, ``busy``,
    ``model_missing``, ``caller_error`` or ``cancelled``."""

    kind: ClassVar[str] = "request_finished"
    instance: str
    model: str | None
    outcome: str
    duration: float
    ttft: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    cold_load: bool = False
    error_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Observer = Callable[[PoolEvent], None]


class EventBus:
    """A list of observers that every pool event is handed to, in subscription order."""

    def __init__(self) -> None:
        self._observers: tuple[Observer, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Add an observer; returns a function that removes it again."""
        with self._lock:
            self._observers = (*self._observers, observer)

        def unsubscribe() -> None:
            with self._lock:
                self._observers = tuple(o for o in self._observers if o is not observer)

        return unsubscribe

    def emit(self, event: PoolEvent) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            log_event(event)
        for observer in self._observers:  # a tuple snapshot: subscribing while emitting is safe
            try:
                observer(event)
            except Exception:
                logger.exception("event observer %r failed on %s", observer, event.kind)

    @property
    def active(self) -> bool:
        """Whether an event would reach anyone (an observer or the DEBUG log): build it only then."""
        return bool(self._observers) or logger.isEnabledFor(logging.DEBUG)

    def __len__(self) -> int:
        return len(self._observers)


def log_event(event: PoolEvent) -> None:
    """Log one event under the ``gleitzeit_llm`` logger at DEBUG (WARNING for breaker trips)."""
    level = logging.DEBUG
    if isinstance(event, BreakerStateChanged) and event.new == "open":
        level = logging.WARNING
    details = " ".join(
        f"{k}={round(v, 4) if isinstance(v, float) else v}"
        for k, v in asdict(event).items()
        if v not in (None, {}, "")
    )
    logger.log(level, "%s %s", event.kind, details)
