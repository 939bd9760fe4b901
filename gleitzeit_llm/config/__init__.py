"""Pool configuration: which Ollama servers, how to balance them, when to give up on one.

Four ways in, one result (a frozen :class:`PoolConfig`)::

    PoolConfig(instances=[{"id": "local", "url": "http://localhost:11434"}])    # or .model_validate
    PoolConfig.from_dict({"instances": [...], "load_balancing": {...}})          # the guide's dict form
    PoolConfig.from_yaml("pool.yaml")          # top-level instances:, or a workflow's providers: entry
    PoolConfig.from_env()                      # GLEITZEIT_OLLAMA_* variables (see ENV_VARIABLES)
    PoolConfig.load(source)                    # any of the above; None means the environment

Every bad input raises one :class:`~gleitzeit_llm.errors.ConfigError` whose message names the field
(``instances[1].url``), or the environment variable, or the file and line, the value given and what is
allowed. Header values and URL credentials are secrets: they never appear in messages or ``repr``.
The reference is ``docs/configuration.md``.

The package, one job a module: :mod:`.models` (the sections and instances, their field rules),
:mod:`.pool` (:class:`PoolConfig` and its constructors), :mod:`.sources` (mapping, YAML file,
environment), :mod:`.yamlfile` (the YAML reader with line numbers, shared with workflows),
:mod:`.errors` (pydantic's errors -> one ConfigError), :mod:`.tls` (TLS files checked at load).
"""

from __future__ import annotations

from gleitzeit_llm.config.models import (
    CircuitBreakerConfig,
    InstanceConfig,
    LoadBalancingConfig,
    LoadBalancingStrategy,
    SharedStateConfig,
    TimeoutConfig,
)
from gleitzeit_llm.config.pool import PoolConfig
from gleitzeit_llm.config.sources import ENV_CONFIG, ENV_INSTANCES, ENV_MAX_CONCURRENT, ENV_VARIABLES
from gleitzeit_llm.ollama.urls import DEFAULT_PORT as DEFAULT_OLLAMA_PORT

__all__ = [
    "DEFAULT_OLLAMA_PORT",
    "ENV_CONFIG",
    "ENV_INSTANCES",
    "ENV_MAX_CONCURRENT",
    "ENV_VARIABLES",
    "CircuitBreakerConfig",
    "InstanceConfig",
    "LoadBalancingConfig",
    "LoadBalancingStrategy",
    "PoolConfig",
    "SharedStateConfig",
    "TimeoutConfig",
]
