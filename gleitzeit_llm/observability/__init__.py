"""Observability: pool events, logging and Prometheus metrics.

The event types and :class:`EventBus` are :mod:`.events`' public names, re-exported here.
``instrument``, ``start_metrics_server`` and ``PoolMetrics`` (from :mod:`.prometheus`) are
imported on first use, so importing this package does not need prometheus-client.
"""

from typing import Any

from gleitzeit_llm.observability import events
from gleitzeit_llm.observability.events import *  # noqa: F403  (exactly events.__all__)

__all__ = list(events.__all__)


def __getattr__(name: str) -> Any:
    if name in ("instrument", "start_metrics_server", "PoolMetrics"):
        from gleitzeit_llm.observability import prometheus

        return getattr(prometheus, name)
    raise AttributeError(f"module 'gleitzeit_llm.observability' has no attribute {name!r}")
