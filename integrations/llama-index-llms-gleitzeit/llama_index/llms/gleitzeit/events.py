"""The pool's events as LlamaIndex instrumentation events.

Every event a gleitzeit pool emits (routing decisions, failovers, fallbacks, breaker and health
changes, finished attempts) is dispatched on LlamaIndex's instrumentation dispatcher as one of the
``Pool*Event`` classes below, so any event handler (Arize Phoenix, Langfuse, our
:class:`~llama_index.llms.gleitzeit.PrometheusEventHandler`) sees them. An event raised during a
call carries that call's ``span_id``; background events (health probes) carry none.

``OllamaPool`` and ``OllamaPoolEmbedding`` call :func:`instrument_pool` on their pool; call it
yourself for a provider you use directly.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent

from gleitzeit_llm.observability import events as pool_events
from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = [
    "PoolBreakerStateChangedEvent",
    "PoolEmbeddingCallEvent",
    "PoolEvent",
    "PoolFailoverEvent",
    "PoolFallbackEvent",
    "PoolHealthStateChangedEvent",
    "PoolInstanceAddedEvent",
    "PoolInstanceRemovedEvent",
    "PoolRequestFinishedEvent",
    "PoolRoutingDecisionEvent",
    "instrument_pool",
    "listening",
]

dispatcher = get_dispatcher(__name__)


class PoolEvent(BaseEvent):
    """Base of the pool's instrumentation events; ``kind`` is the pool event's name."""

    kind: str = "event"

    @classmethod
    def class_name(cls) -> str:
        return cls.__name__


class PoolRoutingDecisionEvent(PoolEvent):
    """An instance was chosen for one attempt of a call."""

    kind: str = "routing_decision"
    instance: str
    model: str | None = None
    strategy: str
    candidates: int
    attempt: int = 1
    reason: str = ""


class PoolFailoverEvent(PoolEvent):
    """An attempt failed on ``from_instance``; the call is tried again elsewhere."""

    kind: str = "failover"
    from_instance: str
    model: str | None = None
    error: str
    attempt: int


class PoolFallbackEvent(PoolEvent):
    """The requested model failed everywhere; ``fallback_model`` answers instead."""

    kind: str = "fallback"
    model: str
    fallback_model: str
    reason: str


class PoolBreakerStateChangedEvent(PoolEvent):
    """An instance's circuit breaker changed state (closed, open, half_open)."""

    kind: str = "breaker_state_changed"
    instance: str
    old: str
    new: str
    reason: str


class PoolHealthStateChangedEvent(PoolEvent):
    """An instance's health changed (healthy, degraded, unhealthy, unknown)."""

    kind: str = "health_state_changed"
    instance: str
    old: str
    new: str
    reason: str


class PoolInstanceAddedEvent(PoolEvent):
    kind: str = "instance_added"
    instance: str


class PoolInstanceRemovedEvent(PoolEvent):
    kind: str = "instance_removed"
    instance: str
    in_flight: int


class PoolRequestFinishedEvent(PoolEvent):
    """One attempt on one instance ended (``outcome``: success, failure, busy, ...)."""

    kind: str = "request_finished"
    instance: str
    model: str | None = None
    outcome: str
    duration: float
    ttft: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    cold_load: bool = False
    error_type: str | None = None
    extra: dict[str, Any] = {}


class PoolEmbeddingCallEvent(PoolEvent):
    """One ``/api/embed`` call of ``OllamaPoolEmbedding`` through the pool, failovers included.

    ``model`` is the requested model; ``fallback_model`` is set when another model answered.
    ``error_type`` is the exception's class name when the call failed. ``instance_url`` is the
    serving instance's URL (for the metrics' server address and port, never a label itself).
    """

    kind: str = "embedding_call"
    model: str
    texts: int
    duration: float
    instance: str | None = None
    instance_url: str | None = None
    response_model: str | None = None
    attempts: int | None = None
    fallback_model: str | None = None
    input_tokens: int | None = None
    error_type: str | None = None


_CLASSES: dict[type[pool_events.PoolEvent], type[PoolEvent]] = {
    pool_events.RoutingDecision: PoolRoutingDecisionEvent,
    pool_events.FailoverEvent: PoolFailoverEvent,
    pool_events.FallbackEvent: PoolFallbackEvent,
    pool_events.BreakerStateChanged: PoolBreakerStateChangedEvent,
    pool_events.HealthStateChanged: PoolHealthStateChangedEvent,
    pool_events.InstanceAdded: PoolInstanceAddedEvent,
    pool_events.InstanceRemoved: PoolInstanceRemovedEvent,
    pool_events.RequestFinished: PoolRequestFinishedEvent,
}

_instrumented: weakref.WeakSet[OllamaPoolProvider] = weakref.WeakSet()
_lock = threading.Lock()


def listening() -> bool:
    """Whether any event handler would see an event of ours (else building it is wasted work)."""
    current: Any = dispatcher
    while current is not None:
        if current.event_handlers:
            return True
        if not current.propagate or current.manager is None or not current.parent_name:
            return False
        current = current.parent
    return False


def to_instrumentation_event(event: pool_events.PoolEvent) -> PoolEvent | None:
    """The instrumentation event for a pool event (``None`` for kinds this version does not know)."""
    cls = _CLASSES.get(type(event))
    if cls is None:
        return None
    data = event.as_dict()
    data.pop("kind", None)
    return cls(**data)


def _forward(event: pool_events.PoolEvent) -> None:
    if not listening():
        return
    converted = to_instrumentation_event(event)
    if converted is not None:
        dispatcher.event(converted)


def instrument_pool(provider: OllamaPoolProvider) -> None:
    """Dispatch ``provider``'s events as instrumentation events (idempotent)."""
    with _lock:
        if provider in _instrumented:
            return
        _instrumented.add(provider)
    provider.events.subscribe(_forward)
