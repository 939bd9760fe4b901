"""Which pool a model object uses: a shared ``OllamaPoolProvider``, or one it builds and owns."""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self, TypedDict, Unpack

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.hints import HINT_NAMES, RoutingHints
from gleitzeit_llm.ollama.names import model_key
from gleitzeit_llm.ownership import ProviderHandle, open_provider
from langchain_gleitzeit._configurable import rebuilt_from

__all__ = [
    "PoolFields",
    "PoolHandle",
    "RoutingArguments",
    "open_pool",
    "refuse_client_kwargs",
    "validate_model",
]

# The upstream classes' httpx settings: a pool's instances carry their own headers (InstanceConfig.headers).
_CLIENT_KWARGS = ("client_kwargs", "sync_client_kwargs", "async_client_kwargs")


def refuse_client_kwargs(values: Any, upstream: str, timeouts: str) -> Any:
    """A ``mode="before"`` validator's step: refuse the ``upstream`` class's ``client_kwargs``,
    ``sync_client_kwargs`` and ``async_client_kwargs`` with where their settings go in a pool
    (``timeouts`` says where this class takes timeouts). Empty ones, the upstream default, are
    dropped."""
    if not isinstance(values, Mapping) or values.keys().isdisjoint(_CLIENT_KWARGS):
        return values
    values = dict(values)
    given = [name for name in _CLIENT_KWARGS if values.pop(name, None)]
    if given:
        owner = f"{upstream}'" if upstream.endswith("s") else f"{upstream}'s"
        raise ValueError(
            f"{', '.join(given)} are {owner} httpx settings; a pool sets headers per instance "
            f"(instances=[{{'url': ..., 'headers': {{...}}}}]) and timeouts {timeouts}"
        )
    return values


class RoutingArguments(TypedDict, total=False):
    """The routing hints :meth:`PoolFields.with_routing` takes (``None`` clears one)."""

    load_balancing_strategy: str | None
    instance_tags: Sequence[str] | None
    require_gpu: bool | None
    fallback_model: str | None
    max_latency: float | None
    session_id: str | None


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
    shared_state: Any = Field(default=None, exclude=True, repr=False)
    """Share the pool's state with the other processes running it, through Redis: a URL
    (``"redis://cache:6379/0"``) or ``{"url": ..., "namespace": ...}`` (docs/scale-out.md)."""
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
    session_id: str | None = None
    """Keep one conversation's calls on one instance (its prompt cache), within a bounded load."""

    def with_routing(self, **hints: Unpack[RoutingArguments]) -> Self:
        """A copy of this model with these routing hints as its fields, on the same pool.

        Hints not given keep this model's value; ``None`` clears one. They are checked here
        (:class:`gleitzeit_llm.RequestError` naming the hint). Unlike ``.bind(...)``, whose
        arguments live on a wrapper that ``bind_tools``, ``with_structured_output`` and agents
        replace, the copy routes by them through every wrapper::

            gpu = llm.with_routing(instance_tags=["gpu"], fallback_model="llama3.2:1b")
            agent = create_react_agent(gpu, tools)
        """
        unknown = sorted(set(hints) - set(HINT_NAMES))
        if unknown:
            raise TypeError(
                f"with_routing() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"routing hints are {', '.join(HINT_NAMES)}"
            )
        parsed = RoutingHints.parse(hints)
        update: dict[str, Any] = {name: getattr(parsed, name) for name in hints}
        if update.get("instance_tags") is not None:
            update["instance_tags"] = list(update["instance_tags"])
        if "require_gpu" in update:
            update["require_gpu"] = bool(update["require_gpu"])
        # A copy shares the pool handle (ProviderHandle.__copy__), so one pool state serves both.
        return self.model_copy(update=update)


# Kept under the name the adapters have used; the handle lives in the core, shared by all adapters.
PoolHandle = ProviderHandle

# The arguments each handle of ours was opened with: a model rebuilt by configurable_fields with
# the same ones gets that handle (see _configurable.py). Entries go with their handle.
_OPENED_WITH: weakref.WeakKeyDictionary[PoolHandle, dict[str, Any]] = weakref.WeakKeyDictionary()


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
    shared_state: Any = None,
) -> PoolHandle:
    """The handle for a model's pool arguments. No connection is made here, unless ``validate``
    names a model to check for (:func:`validate_model`); then a pool built here is closed again
    when the check fails.

    A model rebuilt from another one's fields (``configurable_fields``) with the same pool
    arguments gets that model's handle: one pool state, not a fresh pool per configured call.
    """
    if pool is not None and (timeout is not None or max_retries is not None):
        raise ValueError(
            "timeout and max_retries configure the pool a model builds itself; with pool=... set "
            "them in that pool's configuration (timeouts.total, load_balancing.retry_attempts)"
        )
    if base_url is not None and (instances is not None or config is not None):
        raise ValueError("give either base_url=... or instances/config, not both")
    options: dict[str, Any] = {
        "pool": pool,
        "instances": instances,
        "config": config,
        "base_url": base_url,
        # An explicit max_retries asks for retries, on the one server of a base_url pool too.
        "load_balancing": None
        if max_retries is None
        else {"retry_attempts": max_retries, "retry_same_instance": True},
        "timeouts": None if timeout is None else {"total": timeout},
        "health_checks": health_checks,
        "shared_state": shared_state,
    }
    origin = rebuilt_from()
    if origin is not None and _OPENED_WITH.get(origin._handle) == options:
        if validate is not None and validate != getattr(origin, "model", None):
            validate_model(origin._handle.provider, validate)  # a shared pool stays open
        return origin._handle
    handle = open_provider(**options)
    _OPENED_WITH[handle] = options
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
