"""Which pool a model object uses: a shared ``OllamaPoolProvider``, or one it builds and owns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.ollama.names import model_key
from gleitzeit_llm.ownership import ProviderHandle, open_provider

__all__ = ["PoolFields", "PoolHandle", "open_pool", "validate_model"]


class PoolFields(BaseModel):
    """Mixin: where a model's pool comes from (excluded from serialization: URLs may hold
    credentials) and the routing hints used as defaults for every call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    instances: list[Any] | None = Field(default=None, exclude=True, repr=False)
    """The Ollama servers: URLs (``"http://gpu1:11434"``, ``"gpu:gpu1:11434"``) or instance mappings
    (``{"id", "url", "models", "tags", "max_concurrent", "priority", "weight", "headers", ...}``)."""
    config: Any = Field(default=None, exclude=True, repr=False)
    """A pool configuration instead of ``instances``: ``PoolConfig``, mapping or YAML path."""
    base_url: str | None = Field(default=None, exclude=True, repr=False)
    """One server, as in ChatOllama and OllamaEmbeddings (a pool of one)."""
    pool: OllamaPoolProvider | None = Field(default=None, exclude=True, repr=False)
    """An existing provider to share between many chat models and embeddings (not closed by them)."""
    health_checks: bool = True
    """Whether a pool built by this model runs background health checks."""

    # -- routing hints (defaults; each can be given per call) -------------------------------------

    load_balancing_strategy: str | None = None
    """Strategy for this model's calls (``least_loaded``, ``round_robin``, ``latency_based``, ...)."""
    instance_tags: list[str] | None = None
    """Only instances with all these tags serve the calls."""
    require_gpu: bool = False
    """Only instances tagged ``gpu`` serve the calls."""
    fallback_model: str | None = None
    """Model to use once ``model`` failed or is missing everywhere it could run."""
    max_latency: float | None = None
    """Prefer instances expected to answer within this many milliseconds."""


# Kept under the name the adapters have used; the handle lives in the core, shared by all adapters.
PoolHandle = ProviderHandle


def open_pool(
    *,
    pool: Any = None,
    instances: Sequence[Any] | None = None,
    config: Any = None,
    base_url: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    health_checks: bool = True,
    validate: str | None = None,
) -> PoolHandle:
    """The handle for a model's pool arguments. No connection is made here, unless ``validate``
    names a model to check for (:func:`validate_model`); then a pool built here is closed again
    when the check fails."""
    if pool is not None and (timeout is not None or max_retries is not None):
        raise ValueError(
            "timeout and max_retries configure the pool a model builds itself; with pool=... set "
            "them in that pool's configuration (timeouts.total, load_balancing.retry_attempts)"
        )
    if base_url is not None and (instances is not None or config is not None):
        raise ValueError("give either base_url=... or instances/config, not both")
    handle = open_provider(
        pool=pool,
        instances=instances,
        config=config,
        base_url=base_url,
        # An explicit max_retries asks for retries, on the one server of a base_url pool too.
        load_balancing=None
        if max_retries is None
        else {"retry_attempts": max_retries, "retry_same_instance": True},
        timeouts=None if timeout is None else {"total": timeout},
        health_checks=health_checks,
    )
    if validate is not None:
        try:
            validate_model(handle.provider, validate)
        except BaseException:
            handle.close()
            raise
    return handle


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
