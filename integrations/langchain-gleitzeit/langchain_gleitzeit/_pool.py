"""Which pool a model object uses: a shared ``OllamaPoolProvider``, or one it builds and owns."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from typing import Any

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.ollama.names import model_key
from gleitzeit_llm.options import provider_from_options

__all__ = ["PoolHandle", "open_pool", "validate_model"]


def _close_quietly(provider: OllamaPoolProvider) -> None:
    with contextlib.suppress(Exception):
        provider.close_sync()


class PoolHandle:
    """The provider of one or more model objects (copies of a model share their handle).

    An owned provider (built from ``instances``/``config``/``base_url``/the environment) is closed
    when the last model object that uses it is garbage-collected, at interpreter exit, or by
    :meth:`close`; a shared one (``pool=``) is never closed here, its creator owns it.
    """

    __slots__ = ("__weakref__", "_finalizer", "owned", "provider")

    def __init__(self, provider: OllamaPoolProvider, *, owned: bool) -> None:
        self.provider = provider
        self.owned = owned
        self._finalizer = weakref.finalize(self, _close_quietly, provider) if owned else None

    def close(self) -> None:
        """Close an owned provider (idempotent); a shared one is left alone."""
        if self._finalizer is not None:
            self._finalizer()

    async def aclose(self) -> None:
        """Close an owned provider, including its connections on the running event loop."""
        if self._finalizer is not None and self._finalizer.detach() is not None:
            await self.provider.close()

    # Copies of a model (model_copy, deepcopy) share the pool rather than cloning threads and sockets.
    def __copy__(self) -> PoolHandle:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> PoolHandle:
        return self


def open_pool(
    *,
    pool: Any = None,
    instances: Sequence[Any] | None = None,
    config: Any = None,
    base_url: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    health_checks: bool = True,
) -> PoolHandle:
    """The handle for a model's pool arguments. No connection is made here."""
    if pool is not None and (timeout is not None or max_retries is not None):
        raise ValueError(
            "timeout and max_retries configure the pool a model builds itself; with pool=... set "
            "them in that pool's configuration (timeouts.total, load_balancing.retry_attempts)"
        )
    if base_url is not None and (instances is not None or config is not None):
        raise ValueError("give either base_url=... or instances/config, not both")
    provider, owned = provider_from_options(
        pool=pool,
        instances=instances,
        config=config,
        base_url=base_url,
        load_balancing=None if max_retries is None else {"retry_attempts": max_retries},
        timeouts=None if timeout is None else {"total": timeout},
        health_checks=health_checks,
    )
    return PoolHandle(provider, owned=owned)


def validate_model(provider: OllamaPoolProvider, model: str) -> None:
    """Raise ``ValueError`` unless some instance of the pool has ``model`` (from ``/api/tags``).

    Starts the pool's health checks and runs one probe round; with health checks off, only the
    instances' configured ``models`` can be consulted.
    """
    provider.initialize_sync()
    wanted = model_key(model)
    instances = provider.status()["instances"]
    known: dict[str, list[str]] = {}  # instance -> the models it has (installed, else configured)
    for instance_id, info in instances.items():
        if info["models_installed"] is not None:
            known[instance_id] = list(info["models_installed"])
        elif info["models_configured"]:
            known[instance_id] = list(info["models_configured"])
    if any(wanted in {model_key(name) for name in names} for names in known.values()):
        return
    errors = {
        i: s["last_error"] for i, s in instances.items() if s["models_installed"] is None and s["last_error"]
    }
    if errors and len(errors) == len(instances):
        details = "; ".join(f"{i}: {e}" for i, e in errors.items())
        raise ValueError(
            f"Failed to connect to any Ollama instance of the pool ({details}). Check that the "
            "servers are running and reachable."
        )
    if not known:
        return  # health checks are off and no instance names its models: nothing to check against
    available = sorted({name for names in known.values() for name in names})
    raise ValueError(
        f"Model `{model}` not found on any instance of the pool ({', '.join(sorted(instances))}). "
        f"Pull it (`ollama pull {model}`) or choose one of: {', '.join(available)}"
    )
