"""Observability: pool events, logging and Prometheus metrics.

``instrument`` and ``start_metrics_server`` (from :mod:`.prometheus`) are imported on first use,
so importing this package does not need prometheus-client.
"""

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in ("instrument", "start_metrics_server", "PoolMetrics"):
        from gleitzeit_llm.observability import prometheus

        return getattr(prometheus, name)
    raise AttributeError(f"module 'gleitzeit_llm.observability' has no attribute {name!r}")
