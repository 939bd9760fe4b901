"""Routing: instance state, circuit breakers, strategies and health checks."""

from gleitzeit_llm.routing.breaker import CircuitBreaker, CircuitState
from gleitzeit_llm.routing.instance import InstanceMetrics, InstanceState, OllamaInstance
from gleitzeit_llm.routing.strategies import SCORERS, STRATEGY_NAMES, Route, Router, RouteRequest

__all__ = [
    "SCORERS",
    "STRATEGY_NAMES",
    "CircuitBreaker",
    "CircuitState",
    "InstanceMetrics",
    "InstanceState",
    "OllamaInstance",
    "Route",
    "RouteRequest",
    "Router",
]
