"""gleitzeit-llm: one pool of Ollama servers, routed well.

Load balancing, health checks, circuit breakers, retries, failover and metrics for several Ollama
servers, usable from plain Python, LangChain and LlamaIndex::

    from gleitzeit_llm import OllamaPoolProvider

    async with OllamaPoolProvider(instances=["http://gpu:11434", "http://cpu:11434"]) as pool:
        reply = await pool.chat("llama3.2", [{"role": "user", "content": "Hello!"}])
        print(reply.message.content, reply.pool.instance_id)

Heavy modules are imported on first use, so ``import gleitzeit_llm`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gleitzeit_llm._version import __version__
from gleitzeit_llm.errors import (
    AllInstancesFailedError,
    ConfigError,
    GleitzeitError,
    InstanceBusyError,
    InstanceError,
    InstanceFailedError,
    InstanceTimeoutError,
    ModelNotFoundError,
    NoInstanceAvailableError,
    PoolError,
    PoolSaturatedError,
    RequestError,
    StreamInterruptedError,
    SyncCallInEventLoopError,
)

if TYPE_CHECKING:
    from gleitzeit_llm.client import ChatReply, GleitzeitClient
    from gleitzeit_llm.config import (
        CircuitBreakerConfig,
        InstanceConfig,
        LoadBalancingConfig,
        LoadBalancingStrategy,
        PoolConfig,
        TimeoutConfig,
    )
    from gleitzeit_llm.hints import RoutingHints
    from gleitzeit_llm.manager import Lease, OllamaPoolManager
    from gleitzeit_llm.observability.events import EventBus, PoolEvent
    from gleitzeit_llm.provider import OllamaPoolProvider, PoolInfo
    from gleitzeit_llm.routing.breaker import CircuitState
    from gleitzeit_llm.routing.instance import InstanceState

_LAZY = {
    "ChatReply": "gleitzeit_llm.client",
    "GleitzeitClient": "gleitzeit_llm.client",
    "CircuitBreakerConfig": "gleitzeit_llm.config",
    "InstanceConfig": "gleitzeit_llm.config",
    "LoadBalancingConfig": "gleitzeit_llm.config",
    "LoadBalancingStrategy": "gleitzeit_llm.config",
    "PoolConfig": "gleitzeit_llm.config",
    "TimeoutConfig": "gleitzeit_llm.config",
    "Lease": "gleitzeit_llm.manager",
    "OllamaPoolManager": "gleitzeit_llm.manager",
    "EventBus": "gleitzeit_llm.observability.events",
    "PoolEvent": "gleitzeit_llm.observability.events",
    "OllamaPoolProvider": "gleitzeit_llm.provider",
    "PoolInfo": "gleitzeit_llm.provider",
    "RoutingHints": "gleitzeit_llm.hints",
    "CircuitState": "gleitzeit_llm.routing.breaker",
    "InstanceState": "gleitzeit_llm.routing.instance",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gleitzeit_llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AllInstancesFailedError",
    "ChatReply",
    "CircuitBreakerConfig",
    "CircuitState",
    "ConfigError",
    "EventBus",
    "GleitzeitClient",
    "GleitzeitError",
    "InstanceBusyError",
    "InstanceConfig",
    "InstanceError",
    "InstanceFailedError",
    "InstanceState",
    "InstanceTimeoutError",
    "Lease",
    "LoadBalancingConfig",
    "LoadBalancingStrategy",
    "ModelNotFoundError",
    "NoInstanceAvailableError",
    "OllamaPoolManager",
    "OllamaPoolProvider",
    "PoolConfig",
    "PoolError",
    "PoolEvent",
    "PoolInfo",
    "PoolSaturatedError",
    "RequestError",
    "RoutingHints",
    "StreamInterruptedError",
    "SyncCallInEventLoopError",
    "TimeoutConfig",
    "__version__",
]
