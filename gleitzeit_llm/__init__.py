"""gleitzeit-llm: one pool of Ollama servers, routed well.

Load balancing, health checks, circuit breakers, retries, failover and metrics for several Ollama
servers, usable from plain Python, LangChain and LlamaIndex.
"""

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
)

__all__ = [
    "AllInstancesFailedError",
    "ConfigError",
    "GleitzeitError",
    "InstanceBusyError",
    "InstanceError",
    "InstanceFailedError",
    "InstanceTimeoutError",
    "ModelNotFoundError",
    "NoInstanceAvailableError",
    "PoolError",
    "PoolSaturatedError",
    "RequestError",
    "StreamInterruptedError",
    "__version__",
]
