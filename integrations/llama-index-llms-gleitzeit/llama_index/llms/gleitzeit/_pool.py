"""The pool behind an ``OllamaPool``: building the provider, and what ``/api/show`` said per model."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.ollama import AsyncOllamaTransport, OllamaTransport, Timeouts
from gleitzeit_llm.ollama.names import model_key
from gleitzeit_llm.options import provider_from_options
from gleitzeit_llm.provider import OllamaPoolProvider
from gleitzeit_llm.routing.instance import InstanceState

__all__ = ["ModelInfo", "afetch_model_info", "build_provider", "cached_model_info", "fetch_model_info"]

# A failed /api/show is retried after this many seconds; a successful one is kept for good.
FAILURE_TTL = 30.0
# /api/show is metadata: it never waits as long as a cold model load may.
SHOW_FIRST_BYTE = 30.0


def build_provider(
    *,
    instances: Sequence[Any] | None,
    config: PoolConfig | Mapping[str, Any] | str | None,
    pool: OllamaPoolProvider | None,
    base_url: str | None,
    load_balancing: Mapping[str, Any] | None = None,
    request_timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[OllamaPoolProvider, bool]:
    """The provider to use and whether we own it (and so close it); see
    :func:`gleitzeit_llm.options.provider_from_options`."""
    if pool is not None and request_timeout is not None:
        raise ValueError("request_timeout: a setting of a pool of our own; a shared pool= keeps its own")
    # Ollama's client has one read timeout for every wait; the pool splits it by phase.
    timeouts = None if request_timeout is None else {"first_byte": request_timeout, "idle": request_timeout}
    return provider_from_options(
        pool=pool,
        instances=instances,
        config=config,
        base_url=base_url,
        load_balancing=load_balancing,
        timeouts=timeouts,
        headers=headers,
    )


@dataclass(frozen=True)
class ModelInfo:
    """What ``/api/show`` said about a model (``ok`` false: no instance answered)."""

    ok: bool
    context_length: int | None = None
    capabilities: tuple[str, ...] | None = None
    instance: str | None = None
    fetched_at: float = 0.0


_cache: weakref.WeakKeyDictionary[OllamaPoolProvider, dict[str, ModelInfo]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def cached_model_info(provider: OllamaPoolProvider, model: str) -> ModelInfo | None:
    """The cached answer for ``model``, if there is a fresh one (no I/O)."""
    with _lock:
        info = _cache.get(provider, {}).get(_key(model))
    if info is None or (not info.ok and time.monotonic() - info.fetched_at > FAILURE_TTL):
        return None
    return info


def _store(provider: OllamaPoolProvider, model: str, info: ModelInfo) -> ModelInfo:
    with _lock:
        _cache.setdefault(provider, {})[_key(model)] = info
    return info


def _key(model: str) -> str:
    try:
        return model_key(model)
    except Exception:
        return model


def _candidates(provider: OllamaPoolProvider, model: str) -> list[Any]:
    """Instances that may have the model, the healthy ones first."""
    key = _key(model)
    found = [i for i in provider.manager.instances if not i.removed and i.may_serve(key)]
    return sorted(found, key=lambda i: (i.state is InstanceState.UNHEALTHY, not i.is_installed(key)))


def _timeouts(provider: OllamaPoolProvider) -> Timeouts:
    t = provider.config.timeouts
    first_byte = min(t.first_byte, SHOW_FIRST_BYTE) if t.first_byte else SHOW_FIRST_BYTE
    return Timeouts(connect=t.connect, first_byte=first_byte, idle=t.idle)


def _info(show: Any, instance: str) -> ModelInfo:
    caps = tuple(show.capabilities) if show.capabilities is not None else None
    return ModelInfo(True, show.context_length, caps, instance, time.monotonic())


def fetch_model_info(provider: OllamaPoolProvider, model: str) -> ModelInfo:
    """``/api/show`` on the first instance that answers; cached per provider and model."""
    info = cached_model_info(provider, model)
    if info is not None:
        return info
    for inst in _candidates(provider, model):
        try:
            with OllamaTransport(
                inst.url,
                instance_id=inst.id,
                timeouts=_timeouts(provider),
                headers=dict(inst.config.headers) or None,
            ) as transport:
                return _store(provider, model, _info(transport.show(model), inst.id))
        except Exception:
            continue
    return _store(provider, model, ModelInfo(False, fetched_at=time.monotonic()))


async def afetch_model_info(provider: OllamaPoolProvider, model: str) -> ModelInfo:
    """Async twin of :func:`fetch_model_info`."""
    info = cached_model_info(provider, model)
    if info is not None:
        return info
    for inst in _candidates(provider, model):
        try:
            async with AsyncOllamaTransport(
                inst.url,
                instance_id=inst.id,
                timeouts=_timeouts(provider),
                headers=dict(inst.config.headers) or None,
            ) as transport:
                return _store(provider, model, _info(await transport.show(model), inst.id))
        except asyncio.CancelledError:
            raise
        except Exception:
            continue
    return _store(provider, model, ModelInfo(False, fetched_at=time.monotonic()))
