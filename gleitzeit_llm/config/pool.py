"""The root of a pool's configuration, and the ways to make one.

``PoolConfig(...)`` validates keyword arguments; :meth:`PoolConfig.from_dict`, :meth:`~PoolConfig.from_yaml`
and :meth:`~PoolConfig.from_env` take the data from :mod:`.sources` and validate it so that every
error points back at where the value came from; :meth:`PoolConfig.load` picks one of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import Field, field_validator

from gleitzeit_llm.config.errors import _Invalid, _Origin, _validate
from gleitzeit_llm.config.models import (
    _SECTION,
    InstanceConfig,
    LoadBalancingConfig,
    SharedStateConfig,
    TimeoutConfig,
    _ConfigModel,
    _split_entries,
)
from gleitzeit_llm.config.sources import env_source, mapping_source, yaml_source
from gleitzeit_llm.errors import ConfigError
from gleitzeit_llm.ollama.urls import redact_url

__all__ = ["PoolConfig"]


class PoolConfig(_ConfigModel):
    """Everything the pool needs: the instances, load balancing, timeouts.

    >>> cfg = PoolConfig.from_dict({"instances": ["http://localhost:11434", "gpu:gpu1:11434"]})
    >>> [i.id for i in cfg.instances]
    ['localhost:11434', 'gpu']
    """

    instances: list[InstanceConfig]
    load_balancing: Annotated[LoadBalancingConfig, _SECTION] = Field(
        default_factory=lambda: LoadBalancingConfig()
    )
    timeouts: Annotated[TimeoutConfig, _SECTION] = Field(default_factory=lambda: TimeoutConfig())
    shared_state: SharedStateConfig | None = None
    """Share leases, breakers and what is learned with every process running this pool, through
    Redis (docs/scale-out.md); ``None``: this process keeps its own state."""

    @field_validator("instances", mode="before")
    @classmethod
    def _instances_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):  # "http://a:11434,http://b:11434" as in the environment variable
            return _split_entries(value)
        return value

    @field_validator("instances")
    @classmethod
    def _unique(cls, value: list[InstanceConfig]) -> list[InstanceConfig]:
        if not value:
            raise _Invalid(
                "at least one instance is required",
                hint="e.g. instances: [{id: local, url: http://localhost:11434}]",
                show_value=False,
            )
        urls: dict[str, int] = {}
        ids: dict[str, int] = {}
        for i, inst in enumerate(value):
            if inst.url in urls:
                raise _Invalid(
                    f"instances[{urls[inst.url]}] and instances[{i}] have the same URL "
                    f"{redact_url(inst.url)!r}",
                    hint="each instance must be a different server; remove one",
                    sub_loc=(i, "url"),
                    value=inst.url,
                    show_value=False,
                )
            if inst.id in ids:
                raise _Invalid(
                    f"instances[{ids[inst.id]}] and instances[{i}] both have id {inst.id!r}",
                    hint="ids must be unique; rename one (an id defaults to host:port of the URL)",
                    sub_loc=(i, "id"),
                    value=inst.id,
                    show_value=False,
                )
            urls[inst.url] = i
            ids[inst.id] = i
        return value

    # -- constructors ------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, provider: str | None = None) -> PoolConfig:
        """The guide's dict form (``{"instances": [...], "load_balancing": {...}}``).

        A workflow mapping with ``providers: {name: {type: ollama_pool, ...}}`` works too; ``provider``
        picks one when there are several.
        """
        return cls._from_source(*mapping_source(mapping, provider))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, provider: str | None = None) -> PoolConfig:
        """A YAML file: top-level ``instances:`` / ``load_balancing:``, or a workflow's ``providers:``."""
        return cls._from_source(*yaml_source(path, provider))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PoolConfig:
        """The ``GLEITZEIT_OLLAMA_*`` variables (see :data:`ENV_VARIABLES` and docs/configuration.md).

        ``GLEITZEIT_OLLAMA_CONFIG`` names a YAML file read first; the other variables override it.
        With neither it nor ``GLEITZEIT_OLLAMA_INSTANCES``, the pool is the one local server
        ``http://localhost:11434``. Empty variables count as unset.
        """
        return cls._from_source(*env_source(environ))

    @classmethod
    def _from_source(cls, data: Mapping[str, Any], origin: _Origin) -> PoolConfig:
        # Errors point at the source: the file and line, the variable, the providers: entry.
        return _validate(cls, lambda: super(_ConfigModel, cls).model_validate(data), origin)

    @classmethod
    def load(
        cls,
        source: PoolConfig | Mapping[str, Any] | str | os.PathLike[str] | Iterable[Any] | None = None,
        *,
        provider: str | None = None,
    ) -> PoolConfig:
        """The one entry point: a PoolConfig (returned as is), a mapping, a YAML path, a list of
        instances (mappings or URL strings), or ``None`` for the environment."""
        if source is None:
            return cls.from_env()
        if isinstance(source, PoolConfig):
            return source
        if isinstance(source, Mapping):
            return cls.from_dict(source, provider=provider)
        if isinstance(source, (str, os.PathLike)):
            return cls.from_yaml(source, provider=provider)
        if isinstance(source, (list, tuple)):
            return cls.from_dict({"instances": list(source)})
        raise ConfigError(
            f"cannot load a pool configuration from {type(source).__name__}",
            value=type(source).__name__,
            hint="pass a PoolConfig, a mapping, a YAML path, a list of instances, or None (environment)",
        )
