"""The configuration's models: strategy, sections and instances, frozen and validated.

Field types and validators live here; what a failure reads like is :mod:`.errors`' job, where the
data came from is :mod:`.sources`', and the root model :class:`~.pool.PoolConfig` is in :mod:`.pool`.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic import model_validator as _model_validator

from gleitzeit_llm.config.errors import _config_error, _Invalid, _show, _validate
from gleitzeit_llm.config.tls import _existing_file, _load_tls
from gleitzeit_llm.errors import ConfigError
from gleitzeit_llm.ollama.timeouts import TIMEOUT_HINT, Timeouts, timeout_problem
from gleitzeit_llm.ollama.urls import InvalidURL, parse_url, redact_store_url, redact_url

__all__ = [
    "CircuitBreakerConfig",
    "InstanceConfig",
    "LoadBalancingConfig",
    "LoadBalancingStrategy",
    "SharedStateConfig",
    "TimeoutConfig",
]

_M = TypeVar("_M", bound="_ConfigModel")


# --------------------------------------------------------------------------------------------------
# Strategy


class LoadBalancingStrategy(str, enum.Enum):
    """How the pool picks among the eligible instances.

    Accepts case and separator variants: ``"Least-Loaded"`` and ``"least loaded"`` mean ``least_loaded``.
    """

    LEAST_LOADED = "least_loaded"
    """Fewest in-flight requests relative to ``max_concurrent`` (the default)."""
    ROUND_ROBIN = "round_robin"
    """Take turns."""
    MODEL_AFFINITY = "model_affinity"
    """Prefer instances that already have the model loaded (a cold load costs 10-30 s)."""
    LATENCY_BASED = "latency_based"
    """Lowest recent latency; instances without data are explored, never starved."""
    WEIGHTED = "weighted"
    """In proportion to ``weight``."""
    PRIORITY = "priority"
    """Fill the most preferred tier (lowest ``priority``) first, least loaded inside it."""
    CACHE_AWARE = "cache_aware"
    """The instance that most likely holds the prompt's prefix in its cache, within a bounded share
    of the load (``balance_epsilon``); least loaded when none does."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> LoadBalancingStrategy | None:
        if isinstance(value, str):
            key = re.sub(r"[\s\-]+", "_", value.strip().lower())
            for member in cls:
                if member.value == key:
                    return member
        return None

    @classmethod
    def parse(cls, value: object, *, field: str = "strategy") -> LoadBalancingStrategy:
        """``value`` as a strategy, or a :class:`ConfigError` listing the valid ones.

        For per-call hints (``load_balancing_strategy``); ``field`` names the hint in the message.
        """
        try:
            return _parse_strategy(value)
        except _Invalid as exc:
            problem = exc
        sep = " " if problem.text.endswith("?") else "; "
        raise ConfigError(
            f"{field} = {_show(value)}: {problem.text}{sep}{problem.hint}",
            field=field,
            value=value,
            hint=problem.hint,
        )


def _parse_strategy(value: object) -> LoadBalancingStrategy:
    if isinstance(value, LoadBalancingStrategy):
        return value
    valid = ", ".join(m.value for m in LoadBalancingStrategy)
    if isinstance(value, str):
        member = LoadBalancingStrategy._missing_(value)
        if member is not None:
            return member
        close = difflib.get_close_matches(
            re.sub(r"[\s\-]+", "_", value.strip().lower()), [m.value for m in LoadBalancingStrategy], n=1
        )
        text = "unknown strategy" + (f"; did you mean {close[0]!r}?" if close else "")
        raise _Invalid(text, hint=f"valid strategies: {valid}")
    raise _Invalid("expected a strategy name (a string)", hint=f"valid strategies: {valid}")


# --------------------------------------------------------------------------------------------------
# Field types


def _not_bool(value: Any) -> Any:
    # ``True`` is an int to Python and to pydantic's lax mode; as a count or seconds it is a mistake.
    if isinstance(value, bool):
        raise _Invalid("expected a number, not a boolean")
    return value


_Count = Annotated[int, BeforeValidator(_not_bool), Field(ge=1)]
_NonNegInt = Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]
_Seconds = Annotated[float, BeforeValidator(_not_bool), Field(gt=0)]
_NonNegSeconds = Annotated[float, BeforeValidator(_not_bool), Field(ge=0)]
_Positive = Annotated[float, BeforeValidator(_not_bool), Field(gt=0)]


def _timeout(value: float) -> float:
    # The wire layer's rule (ollama/timeouts.py), so a config and a Timeouts accept the same values.
    problem = timeout_problem(value)
    if problem is not None:
        raise _Invalid(problem, hint=TIMEOUT_HINT)
    return value


_Timeout = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_timeout)]


def _not_below(model: BaseModel, name: str, floor: str, *, hint: str | None = None) -> None:
    """``name`` must be >= ``floor``; left unset, it follows a larger ``floor`` instead of failing."""
    value, minimum = getattr(model, name), getattr(model, floor)
    if value >= minimum:
        return
    if name not in model.model_fields_set:
        model.__dict__[name] = minimum  # only the floor was set: the default cap follows it
        return
    raise _Invalid(f"must be >= {floor} ({minimum:g})", hint=hint, sub_loc=(name,), value=value)


def _none_for_empty(value: Any) -> Any:
    """A missing YAML section (``load_balancing:`` with nothing under it) means the defaults."""
    return {} if value is None else value


_SECTION = BeforeValidator(_none_for_empty)
"""On a section field: an empty section means its defaults."""


# --------------------------------------------------------------------------------------------------
# Base model: frozen, strict about unknown fields, and every failure is a ConfigError.


class _ConfigModel(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        hide_input_in_errors=True,  # a pydantic error that escapes anyway shows no secrets
        str_strip_whitespace=True,
    )

    def __init__(self, /, **data: Any) -> None:
        error = None
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = _config_error(exc, type(self))
        if error is not None:  # raised outside ``except``: no chained ValidationError in the traceback
            raise error

    # Pydantic validates nested models through an overridden ``__init__`` unless it is marked as the base
    # one; then a nested section's ConfigError would be wrapped in the parent's error. This ``__init__``
    # only translates errors, so nested sections may skip it.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls: type[_M], obj: Any, **kwargs: Any) -> _M:  # type: ignore[override]
        """Validate ``obj``; raise :class:`ConfigError` (never ``ValidationError``)."""
        return _validate(cls, lambda: super(_ConfigModel, cls).model_validate(obj, **kwargs))

    @classmethod
    def model_validate_json(cls: type[_M], json_data: str | bytes | bytearray, **kwargs: Any) -> _M:  # type: ignore[override]
        return _validate(cls, lambda: super(_ConfigModel, cls).model_validate_json(json_data, **kwargs))

    @classmethod
    def model_validate_strings(cls: type[_M], obj: Any, **kwargs: Any) -> _M:  # type: ignore[override]
        return _validate(cls, lambda: super(_ConfigModel, cls).model_validate_strings(obj, **kwargs))

    def model_copy(self: _M, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> _M:
        """A copy with ``update`` applied. Unlike plain pydantic, the result is validated again."""
        if not update:
            return super().model_copy(deep=deep)
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update(self._copy_defaults(update))
        data.update(update)
        return type(self).model_validate(data)

    def _copy_defaults(self, update: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        raise ConfigError(
            f"{type(self).__name__}.{name} cannot be changed: configuration is immutable; "
            f"use .model_copy(update={{{name!r}: ...}})",
            field=name,
            hint="use model_copy(update=...)",
        )

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            super().__delattr__(name)
            return
        raise ConfigError(
            f"{type(self).__name__}.{name} cannot be deleted: configuration is immutable", field=name
        )


# --------------------------------------------------------------------------------------------------
# Sections


class CircuitBreakerConfig(_ConfigModel):
    """When to stop sending requests to a failing instance, and when to try it again.

    closed -> open after ``failure_threshold`` consecutive failures -> half-open after
    ``recovery_timeout`` s, admitting at most ``half_open_requests`` probes -> closed on success, or open
    again for a longer time (growing, capped at ``max_recovery_timeout``) on failure.
    """

    failure_threshold: _Count = 5
    recovery_timeout: _Seconds = 60.0
    half_open_requests: _Count = 3
    max_recovery_timeout: _Seconds = 300.0

    @_model_validator(mode="after")
    def _cap_not_below_start(self) -> CircuitBreakerConfig:
        _not_below(
            self,
            "max_recovery_timeout",
            "recovery_timeout",
            hint="it caps the growing open time, which starts at recovery_timeout",
        )
        return self


class TimeoutConfig(_ConfigModel):
    """Per-request timeouts in seconds; ``None`` means no limit.

    There is deliberately no total timeout by default: a long generation is not a failure.
    """

    connect: _Timeout | None = 5.0
    """Establishing the TCP/TLS connection."""
    first_byte: _Timeout | None = 300.0
    """From sending the request to the first response byte; covers a cold model load (Ollama allows 5 min)."""
    idle: _Timeout | None = 120.0
    """Longest gap between two chunks of a streamed response."""
    total: _Timeout | None = None
    """Whole request, stream included."""

    @field_validator("connect", "first_byte", "idle", "total", mode="before")
    @classmethod
    def _none_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"none", "null", "off", "never", "unlimited"}:
            return None
        return value

    def to_timeouts(self) -> Timeouts:
        """These timeouts as the wire layer's :class:`~gleitzeit_llm.ollama.Timeouts`."""
        return Timeouts(connect=self.connect, first_byte=self.first_byte, idle=self.idle, total=self.total)


class LoadBalancingConfig(_ConfigModel):
    """How requests are spread, retried and queued, and how health is checked."""

    strategy: LoadBalancingStrategy = LoadBalancingStrategy.LEAST_LOADED
    health_check_interval: _Seconds = 30.0
    health_check_timeout: _Seconds = 5.0
    failover: bool = True
    retry_attempts: _NonNegInt = 3
    """Attempts beyond the first; each goes to an instance not yet tried when there is one."""
    retry_same_instance: bool = False
    """Whether a pool of one instance retries on it: off, such a pool makes one attempt per model
    (a retry could only go back to the server that just failed), as a single-server client does."""
    retry_backoff_base: _NonNegSeconds = 0.05
    retry_backoff_max: _NonNegSeconds = 2.0
    queue_timeout: _NonNegSeconds = 60.0
    """How long a call waits for a free slot when every eligible instance is full (0 = fail at once)."""
    affinity_wait: _NonNegSeconds = 5.0
    """model_affinity: how long a call waits for a slot on an instance that has its model loaded
    before loading the model on another one (0 = load elsewhere at once)."""
    max_retry_after: _Seconds = 60.0
    """The longest a 503/429 keeps an instance out of rotation, whatever its Retry-After says."""
    balance_epsilon: _Positive = 0.25
    """cache_aware, ``prefix_weight`` and ``session_id``: no instance takes more than
    ``(1 + balance_epsilon) x`` the mean in-flight (consistent hashing with bounded loads)."""
    prefix_weight: _NonNegSeconds = 0.0
    """The prompt-prefix match as a score term of the other strategies (0 = off)."""
    prefix_cache_tokens: _Count = 4096
    """Prompt tokens one server slot keeps cached (its ``num_ctx``): the prefix index holds
    ``max_concurrent x`` this per instance and model."""
    prefix_fallback: LoadBalancingStrategy = LoadBalancingStrategy.LEAST_LOADED
    """cache_aware: how to pick when no instance holds the prompt's prefix (``least_loaded`` or
    ``latency_based``)."""
    adaptive_concurrency: bool = False
    """Learn per (instance, model) how many requests the server runs at once (from the queue time
    its answers report) and send no more than that, up to ``max_concurrent``; the rest wait here."""
    circuit_breaker: Annotated[CircuitBreakerConfig, _SECTION] = Field(
        default_factory=lambda: CircuitBreakerConfig()
    )

    @field_validator("strategy", "prefix_fallback", mode="before")
    @classmethod
    def _strategy(cls, value: Any) -> LoadBalancingStrategy:
        return _parse_strategy(value)

    @_model_validator(mode="after")
    def _backoff_order(self) -> LoadBalancingConfig:
        _not_below(self, "retry_backoff_max", "retry_backoff_base")
        if self.prefix_fallback not in _PREFIX_FALLBACKS:
            raise _Invalid(
                "must be least_loaded or latency_based",
                hint="the pick when no instance holds the prompt's prefix",
                sub_loc=("prefix_fallback",),
                value=self.prefix_fallback.value,
            )
        return self


_PREFIX_FALLBACKS = (LoadBalancingStrategy.LEAST_LOADED, LoadBalancingStrategy.LATENCY_BASED)

_STORE_SCHEMES = ("redis", "rediss", "unix")
_STORE_URL_HINT = (
    "e.g. shared_state: {url: redis://localhost:6379/0} (also rediss://, unix:///path/redis.sock)"
)
_CLUSTER_URL_HINT = "e.g. shared_state: {url: redis://any-node:6379, cluster: true} (rediss:// for TLS)"
_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class SharedStateConfig(_ConfigModel):
    """Where processes running the same pool share their state (docs/scale-out.md): a Redis or
    Valkey server. Without it each process keeps its own state, as before.

    Also accepts a plain URL string: ``shared_state: redis://cache:6379/0``.
    """

    url: str
    """``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS) or ``unix:///path/to.sock``.
    Credentials are used to connect and never shown (status, logs, errors, metrics)."""
    namespace: str | None = None
    """Keys and channel prefix; default: a hash of the pool's instance ids and URLs, so the same
    configuration meets itself in every process and two different pools never mix."""
    timeout: _Seconds = 0.25
    """Socket timeout of each Redis command. Acquire and release run on the call path: a Redis
    slower than this counts as down and the pool falls back to local state."""
    connect_timeout: _Seconds = 0.5
    """Opening a connection to Redis."""
    lease_ttl: _Seconds = 10.0
    """How long a slot stays taken when its holder stops renewing it (a crashed process); holders
    renew every third of it."""
    refresh_interval: _Seconds = 0.1
    """How often each process reads the pool-wide counts and breakers (the snapshot it routes on);
    its staleness is at most this plus one round trip."""
    reconnect_interval: _Seconds = 2.0
    """While Redis is down, how often a background thread tries it again."""
    cluster: bool = False
    """The URL names one node of a Redis Cluster (or a Valkey cluster): the client learns the
    others from it and follows ``MOVED``/``ASK`` redirects. All keys of a pool share one hash slot."""

    @_model_validator(mode="before")
    @classmethod
    def _from_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in _STORE_SCHEMES:
            shown = redact_store_url(value)
            raise _Invalid(
                f"{shown!r} is not a Redis URL: expected redis://, rediss:// or unix://",
                hint=_STORE_URL_HINT,
                show_value=False,
            )
        if not rest.strip("/") or rest.startswith("@"):
            raise _Invalid("the URL names no server", hint=_STORE_URL_HINT, show_value=False)
        return scheme.lower() + "://" + rest

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _NAMESPACE.fullmatch(value):
            raise _Invalid(
                "a namespace is 1-64 letters, digits, '_', '-' or '.'",
                hint="e.g. namespace: chat-prod (or leave it out: derived from the instances)",
            )
        return value

    @_model_validator(mode="after")
    def _cluster_url(self) -> SharedStateConfig:
        if not self.cluster:
            return self
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            raise _Invalid(
                "a Redis Cluster is reached over TCP, not a unix:// socket",
                hint=_CLUSTER_URL_HINT,
                sub_loc=("url",),
                show_value=False,
            )
        db = parts.path.strip("/") or dict(parse_qsl(parts.query)).get("db", "0")
        if db != "0":
            raise _Invalid(
                f"a Redis Cluster has only database 0, the URL selects {db!r}",
                hint=_CLUSTER_URL_HINT,
                sub_loc=("url",),
                show_value=False,
            )
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_store_url(value) if name == "url" else value


# --------------------------------------------------------------------------------------------------
# Instances


def _default_id(url: str) -> str:
    """``http://user:pw@gpu1:11434/ollama`` -> ``gpu1:11434/ollama``."""
    return parse_url(url).address


def _parse_instance_string(text: str) -> dict[str, str]:
    """One instance written as a string: ``id:url``, ``url``, ``id:host[:port]`` or ``host[:port]``.

    A ``:`` before ``://`` separates an id; otherwise ``a:b`` is host:port when ``b`` is a number and
    id:host when it is not.
    """
    entry = text.strip()
    if not entry:
        raise _Invalid("empty instance entry", hint="write id:url, url or host:port")
    ident: str | None
    if "://" in entry:
        head = entry.split("://", 1)[0]
        ident, url = entry.split(":", 1) if ":" in head else (None, entry)
    elif entry.startswith("["):  # [::1]:11434
        ident, url = None, entry
    else:
        head, sep, tail = entry.partition(":")
        ident, url = (head, tail) if sep and not tail.isdigit() else (None, entry)
    if ident is None:
        return {"url": url}
    if not ident.strip():
        raise _Invalid(
            "the id before ':' is empty", hint="write id:url (local:http://localhost:11434) or just the url"
        )
    if not url.strip():
        raise _Invalid(
            f"id {ident.strip()!r} has no URL after ':'",
            hint="write id:url, e.g. local:http://localhost:11434",
        )
    return {"id": ident.strip(), "url": url}


def _string_list(value: Any) -> Any:
    """``"a, b"`` -> ``["a", "b"]``; ``None`` -> ``[]``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return value


def _dedupe(items: Iterable[str], what: str) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(items):
        item = item.strip()
        if not item:
            raise _Invalid(f"{what} names must not be empty", sub_loc=(i,), value=item)
        if item not in out:
            out.append(item)
    return out


def _split_entries(value: str) -> list[str]:
    """``"http://a:11434, b"`` -> ``["http://a:11434", "b"]``: an instance list written as text."""
    return [part for part in re.split(r"[,\s]+", value.strip()) if part]


class InstanceConfig(_ConfigModel):
    """One Ollama server.

    Also accepts a plain string: ``"http://gpu1:11434"``, ``"gpu:http://gpu1:11434"``, ``"gpu1:11434"``
    or ``"gpu:gpu1:11434"`` (the rules of ``GLEITZEIT_OLLAMA_INSTANCES``).
    """

    id: str = ""
    """Unique name in the pool; defaults to host:port of the URL."""
    url: str
    """Base URL. No scheme -> ``http://``; no scheme and no port -> port 11434; trailing ``/`` dropped."""
    models: list[str] = Field(default_factory=list)
    """Models the operator says live there; empty = discover from the server."""
    max_concurrent: _Count = 4
    """Requests in flight on this instance at once; more wait in the pool's queue."""
    tags: list[str] = Field(default_factory=list)
    """Labels for routing hints (``instance_tags``); lower-cased, so ``GPU`` == ``gpu``."""
    priority: _NonNegInt = 1
    """Lower = preferred (the ``priority`` strategy fills the lowest tier first)."""
    weight: _Positive = 1.0
    """Share of traffic under the ``weighted`` strategy (3.0 gets three times 1.0)."""
    specialization: str | None = None
    """Free-text description of what this instance is for (``"large-models"``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP headers sent with every request to this instance (auth behind a proxy). Masked in repr."""
    verify: bool | str = True
    """TLS for ``https://``: ``True`` checks the server against the system's CAs, a path checks it
    against that CA bundle (PEM), ``False`` does not check (only on a network you trust)."""
    client_cert: str | None = None
    """Path to a PEM client certificate (mutual TLS); may hold the key too."""
    client_key: str | None = None
    """Path to the client certificate's key, when it is not in ``client_cert``."""

    @field_validator("verify", mode="before")
    @classmethod
    def _verify(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "false",
            "yes",
            "no",
            "1",
            "0",
            "on",
            "off",
        ):
            return value.strip().lower() in ("true", "yes", "1", "on")
        if isinstance(value, str):
            _existing_file(value, "a CA bundle (PEM) path, or true/false")
            _load_tls(
                value,
                None,
                None,
                "",
                "not a PEM CA bundle",
                "expected a file of PEM certificates (-----BEGIN CERTIFICATE-----), or true/false",
            )
        return value

    @field_validator("client_cert", "client_key")
    @classmethod
    def _pem_file(cls, value: str | None) -> str | None:
        if value:
            _existing_file(value, "a PEM file path")
        return value or None

    @_model_validator(mode="after")
    def _key_needs_cert(self) -> InstanceConfig:
        if self.client_key and not self.client_cert:
            raise _Invalid(
                "client_key without client_cert", hint="give client_cert too", sub_loc=("client_key",)
            )
        if self.client_cert:
            _load_tls(
                self.verify,
                self.client_cert,
                self.client_key,
                "client_cert",
                "the client certificate cannot be loaded",
                "expected a PEM certificate with its key, in client_cert or in client_key",
            )
        return self

    @_model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _parse_instance_string(value)
        if not isinstance(value, (Mapping, InstanceConfig)):
            raise _Invalid(
                "expected a mapping (url, id, models, ...) or a URL string",
                hint="e.g. {url: http://gpu1:11434}",
            )
        return value

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            return str(parse_url(value))
        except InvalidURL as exc:
            raise _Invalid(exc.text, hint=exc.hint) from None

    @field_validator("models", "tags", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _string_list(value)

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        return _dedupe(value, "model")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return _dedupe((t.lower() for t in value), "tag")

    @field_validator("specialization")
    @classmethod
    def _specialization(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("headers", mode="before")
    @classmethod
    def _header_values(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {
                k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name, text in value.items():
            if not name or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
                raise _Invalid(
                    "invalid header name",
                    hint="letters, digits and -",
                    sub_loc=(name,),
                    value=name,
                    show_value=False,
                )
            if "\r" in text or "\n" in text:
                raise _Invalid(
                    "header values must not contain line breaks", sub_loc=(name,), show_value=False
                )
            if name.lower() in seen:
                raise _Invalid(
                    f"header {name!r} is given twice (also as {seen[name.lower()]!r})",
                    hint="header names are case-insensitive",
                    sub_loc=(name,),
                    show_value=False,
                )
            seen[name.lower()] = name
        return value

    @_model_validator(mode="after")
    def _id_from_url(self) -> InstanceConfig:
        if not self.id:
            self.__dict__["id"] = _default_id(self.url)
        return self

    def _copy_defaults(self, update: Mapping[str, Any]) -> dict[str, Any]:
        # A derived id follows a new URL; an id the user chose stays.
        if "url" in update and "id" not in update and self.id == _default_id(self.url):
            return {"id": ""}
        return {}

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "headers":
                value = dict.fromkeys(value, "***")
            elif name == "url":
                value = redact_url(value)
            yield name, value
