"""One way to turn a model's pool arguments into a provider, for the framework adapters.

LangChain's ``ChatOllamaPool``, llama-index's ``OllamaPool`` and both embedding classes take the
same sources of instances (``pool=``, ``instances=``, ``config=``, ``base_url=``) plus a few
overrides in their framework's own words; they translate those words and call
:func:`provider_from_options`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["provider_from_options"]


def provider_from_options(
    *,
    pool: Any = None,
    instances: Sequence[Any] | None = None,
    config: Any = None,
    base_url: str | None = None,
    load_balancing: Mapping[str, Any] | None = None,
    timeouts: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    health_checks: bool = True,
    shared_state: Mapping[str, Any] | str | None = None,
) -> tuple[OllamaPoolProvider, bool]:
    """The provider to use and whether the caller owns it (and so closes it).

    At most one of ``pool`` (a shared :class:`OllamaPoolProvider`, used as it is), ``instances``,
    ``config`` (anything :meth:`PoolConfig.load` takes) and ``base_url`` may be given; with none,
    the ``GLEITZEIT_OLLAMA_*`` variables or ``http://localhost:11434`` are used. ``load_balancing``
    and ``timeouts`` override fields of those sections and ``headers`` is added to every instance
    (an instance's own headers win); ``shared_state`` sets the pool's shared state (a Redis URL or
    mapping, docs/scale-out.md); the result is validated like any configuration, so a bad value
    raises :class:`~gleitzeit_llm.errors.ConfigError` naming the field.
    """
    given = [
        name
        for name, value in (
            ("instances", instances),
            ("config", config),
            ("pool", pool),
            ("base_url", base_url),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give one of instances=, config=, pool= or base_url=, not {' and '.join(given)}")
    if pool is not None:
        if not isinstance(pool, OllamaPoolProvider):
            raise TypeError(f"pool must be an OllamaPoolProvider, got {type(pool).__name__}")
        extra = [
            n
            for n, v in (
                ("load_balancing", load_balancing),
                ("timeouts", timeouts),
                ("headers", headers),
                ("shared_state", shared_state),
            )
            if v
        ]
        if extra:
            raise ValueError(
                f"{', '.join(extra)}: settings of a pool of our own; a shared pool= keeps its own"
            )
        return pool, False
    if instances is not None:
        source: Any = {"instances": list(instances)}
    elif base_url is not None:
        source = {"instances": [base_url]}
    else:
        source = config  # None: the environment, else http://localhost:11434
    cfg = PoolConfig.load(source)
    if load_balancing or timeouts or headers or shared_state is not None:
        data = cfg.model_dump()
        if shared_state is not None:
            data["shared_state"] = shared_state
        data["load_balancing"].update(load_balancing or {})
        data["timeouts"].update(timeouts or {})
        if headers:
            for instance in data["instances"]:
                instance["headers"] = {**headers, **(instance.get("headers") or {})}
        cfg = PoolConfig.from_dict(data)
    return OllamaPoolProvider(config=cfg, health_checks=health_checks), True
