"""Observability: pool events, logging and Prometheus metrics."""

from gleitzeit_llm.observability.events import (
    BreakerStateChanged,
    EventBus,
    FailoverEvent,
    FallbackEvent,
    HealthStateChanged,
    InstanceAdded,
    InstanceRemoved,
    PoolEvent,
    RequestFinished,
    RoutingDecision,
)

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
]
