"""Pool configuration: which Ollama servers, how to balance them, when to give up on one.

Four ways in, one result (a frozen :class:`PoolConfig`)::

    PoolConfig(instances=[{"id": "local", "url": "http://localhost:11434"}])    # or .model_validate
    PoolConfig.from_dict({"instances": [...], "load_balancing": {...}})          # the guide's dict form
    PoolConfig.from_yaml("pool.yaml")          # top-level instances:, or a workflow's providers: entry
    PoolConfig.from_env()                      # GLEITZEIT_OLLAMA_* variables (see ENV_VARIABLES)
    PoolConfig.load(source)                    # any of the above; None means the environment

Every bad input raises one :class:`~gleitzeit_llm.errors.ConfigError` whose message names the field
(``instances[1].url``), or the environment variable, or the file and line, the value given and what is
allowed. Header values are secrets: they never appear in messages or ``repr``. The reference is
``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import logging
import os
import re
import ssl
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic import model_validator as _model_validator

from gleitzeit_llm.errors import ConfigError
from gleitzeit_llm.ollama.tls import tls_verify

__all__ = [
    "DEFAULT_OLLAMA_PORT",
    "ENV_VARIABLES",
    "CircuitBreakerConfig",
    "InstanceConfig",
    "LoadBalancingConfig",
    "LoadBalancingStrategy",
    "PoolConfig",
    "TimeoutConfig",
]

logger = logging.getLogger(__name__)

DEFAULT_OLLAMA_PORT = 11434
"""Port added to a server address written without scheme and port (``gpu1`` -> ``http://gpu1:11434``)."""

_M = TypeVar("_M", bound="_ConfigModel")


# --------------------------------------------------------------------------------------------------
# Validation failures raised by our own validators.
#
# Pydantic keeps the exception object of a ValueError raised in a validator (``ctx["error"]``), so our
# validators raise this subclass and the converter below reads the text, hint and exact location from it.


class _Invalid(ValueError):
    def __init__(
        self,
        text: str,
        *,
        hint: str | None = None,
        sub_loc: tuple[int | str, ...] = (),
        value: Any = None,
        show_value: bool = True,
    ):
        super().__init__(text)
        self.text = text
        self.hint = hint
        self.sub_loc = sub_loc  # appended to pydantic's loc: a list validator can point at one item
        self.value = value
        self.show_value = show_value


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


def _none_for_empty(value: Any) -> Any:
    """A missing YAML section (``load_balancing:`` with nothing under it) means the defaults."""
    return {} if value is None else value


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


def _validate(cls: type[_M], run: Callable[[], _M], origin: _Origin | None = None) -> _M:
    error = None
    try:
        return run()
    except ValidationError as exc:
        error = _config_error(exc, cls, origin)
    raise error


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
        if self.max_recovery_timeout < self.recovery_timeout:
            if "max_recovery_timeout" not in self.model_fields_set:
                # Only recovery_timeout was set: the default cap follows it instead of rejecting it.
                self.__dict__["max_recovery_timeout"] = self.recovery_timeout
            else:
                raise _Invalid(
                    f"must be >= recovery_timeout ({self.recovery_timeout:g})",
                    hint="it caps the growing open time, which starts at recovery_timeout",
                    sub_loc=("max_recovery_timeout",),
                    value=self.max_recovery_timeout,
                )
        return self


class TimeoutConfig(_ConfigModel):
    """Per-request timeouts in seconds; ``None`` means no limit.

    There is deliberately no total timeout by default: a long generation is not a failure.
    """

    connect: _Seconds | None = 5.0
    """Establishing the TCP/TLS connection."""
    first_byte: _Seconds | None = 300.0
    """From sending the request to the first response byte; covers a cold model load (Ollama allows 5 min)."""
    idle: _Seconds | None = 120.0
    """Longest gap between two chunks of a streamed response."""
    total: _Seconds | None = None
    """Whole request, stream included."""

    @field_validator("connect", "first_byte", "idle", "total", mode="before")
    @classmethod
    def _none_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"none", "null", "off", "never", "unlimited"}:
            return None
        return value


class LoadBalancingConfig(_ConfigModel):
    """How requests are spread, retried and queued, and how health is checked."""

    strategy: LoadBalancingStrategy = LoadBalancingStrategy.LEAST_LOADED
    health_check_interval: _Seconds = 30.0
    health_check_timeout: _Seconds = 5.0
    failover: bool = True
    retry_attempts: _NonNegInt = 3
    """Attempts beyond the first; each goes to an instance not yet tried when there is one."""
    retry_backoff_base: _NonNegSeconds = 0.05
    retry_backoff_max: _NonNegSeconds = 2.0
    queue_timeout: _NonNegSeconds = 60.0
    """How long a call waits for a free slot when every eligible instance is full (0 = fail at once)."""
    affinity_wait: _NonNegSeconds = 5.0
    """model_affinity: how long a call waits for a slot on an instance that has its model loaded
    before loading the model on another one (0 = load elsewhere at once)."""
    max_retry_after: _Seconds = 60.0
    """The longest a 503/429 keeps an instance out of rotation, whatever its Retry-After says."""
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=lambda: CircuitBreakerConfig())

    @field_validator("circuit_breaker", mode="before")
    @classmethod
    def _section_default(cls, value: Any) -> Any:
        return _none_for_empty(value)

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, value: Any) -> LoadBalancingStrategy:
        return _parse_strategy(value)

    @_model_validator(mode="after")
    def _backoff_order(self) -> LoadBalancingConfig:
        if self.retry_backoff_max < self.retry_backoff_base:
            if "retry_backoff_max" not in self.model_fields_set:
                self.__dict__["retry_backoff_max"] = self.retry_backoff_base
            else:
                raise _Invalid(
                    f"must be >= retry_backoff_base ({self.retry_backoff_base:g})",
                    sub_loc=("retry_backoff_max",),
                    value=self.retry_backoff_max,
                )
        return self


# --------------------------------------------------------------------------------------------------
# Instances

_URL_HINT = "expected http(s)://host[:port], e.g. http://localhost:11434"
_HOST_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_.\-]*[a-z0-9_])?$")
_SCHEME_PREFIX_RE = re.compile(r"^(https?):/*", re.IGNORECASE)
_API_PATH_RE = re.compile(r"/api(?:/(?:chat|generate|embed|embeddings|tags|ps|show|version|pull))?$")
_USERINFO_RE = re.compile(r"(?<=//)([^/@\s:]*):[^/@\s]*@")


def _mask_url(text: str) -> str:
    """``http://user:secret@host`` -> ``http://user:***@host``."""
    return _USERINFO_RE.sub(r"\1:***@", text)


def _normalise_url(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise _Invalid("the URL is empty", hint=_URL_HINT)
    defaulted_port = False
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme.lower() not in ("http", "https"):
            raise _Invalid(f"scheme {scheme!r} is not supported", hint="use http:// or https://")
    elif _SCHEME_PREFIX_RE.match(text):  # "http:/host", "http:host"
        raise _Invalid("malformed URL: the scheme must be followed by '://'", hint=_URL_HINT)
    else:
        text = "http://" + text  # "gpu1:11434" or "gpu1": Ollama's own convention for OLLAMA_HOST
        defaulted_port = True
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise _Invalid("a query string or fragment is not allowed in an instance URL", hint=_URL_HINT)
    host = parts.hostname
    if not host:
        raise _Invalid("the URL has no host", hint=_URL_HINT)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise _Invalid("the port must be a number from 1 to 65535", hint=_URL_HINT)
    if ":" in host or "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise _Invalid(f"invalid host {host!r}", hint=_URL_HINT) from None
        host_text = f"[{host}]"
    elif _HOST_RE.match(host):
        host_text = host
    else:
        raise _Invalid(f"invalid host {host!r}", hint=_URL_HINT)
    path = parts.path.rstrip("/")
    if _API_PATH_RE.search(path):
        raise _Invalid(
            "give the server's base URL, not an API path",
            hint="e.g. http://gpu1:11434; the client adds /api/...",
        )
    if port is None and defaulted_port:
        port = DEFAULT_OLLAMA_PORT
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host_text + (f":{port}" if port is not None else "")
    return f"{parts.scheme.lower()}://{netloc}{path}"


def _default_id(url: str) -> str:
    """``http://user:pw@gpu1:11434/ollama`` -> ``gpu1:11434/ollama``."""
    rest = url.split("://", 1)[1]
    netloc, slash, path = rest.partition("/")
    return netloc.rpartition("@")[2] + (slash + path if path else "")


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


def _existing_file(path: str, what: str) -> None:
    if not Path(path).expanduser().is_file():
        raise _Invalid(f"no such file: {path}", hint=f"expected {what}")


def _tls_reason(exc: Exception) -> str:
    text = str(exc.args[1]) if isinstance(exc, OSError) and len(exc.args) > 1 else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text) or type(exc).__name__


def _load_tls(
    verify: bool | str, cert: str | None, key: str | None, field: str, what: str, hint: str
) -> None:
    # Parsed now, not at the first request: a file that is not PEM is a configuration error that
    # names the field, not an SSLError out of some call. tls_verify caches the context, so the
    # transports use the one made here.
    try:
        tls_verify(verify, cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise _Invalid(
            f"{what}: {_tls_reason(exc)}",
            hint=hint,
            sub_loc=(field,) if field else (),
            value=cert if field else verify,
        ) from None


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
        return _normalise_url(value)

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
                value = _mask_url(value)
            yield name, value


# --------------------------------------------------------------------------------------------------
# The pool


class PoolConfig(_ConfigModel):
    """Everything the pool needs: the instances, load balancing, timeouts.

    >>> cfg = PoolConfig.from_dict({"instances": ["http://localhost:11434", "gpu:gpu1:11434"]})
    >>> [i.id for i in cfg.instances]
    ['localhost:11434', 'gpu']
    """

    instances: list[InstanceConfig]
    load_balancing: LoadBalancingConfig = Field(default_factory=lambda: LoadBalancingConfig())
    timeouts: TimeoutConfig = Field(default_factory=lambda: TimeoutConfig())

    @field_validator("load_balancing", "timeouts", mode="before")
    @classmethod
    def _section_default(cls, value: Any) -> Any:
        return _none_for_empty(value)

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
                    f"{_mask_url(inst.url)!r}",
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
        section, prefix = _pool_section(mapping, provider, source="configuration")
        return _validate(
            cls, lambda: super(_ConfigModel, cls).model_validate(section), _Origin(prefix=prefix)
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, provider: str | None = None) -> PoolConfig:
        """A YAML file: top-level ``instances:`` / ``load_balancing:``, or a workflow's ``providers:``."""
        data, origin = _read_yaml(path)
        section, origin.prefix = _pool_section(data, provider, source=origin.file or "")
        return _validate(cls, lambda: super(_ConfigModel, cls).model_validate(section), origin)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PoolConfig:
        """The ``GLEITZEIT_OLLAMA_*`` variables (see :data:`ENV_VARIABLES` and docs/configuration.md).

        ``GLEITZEIT_OLLAMA_CONFIG`` names a YAML file read first; the other variables override it.
        With neither it nor ``GLEITZEIT_OLLAMA_INSTANCES``, the pool is the one local server
        ``http://localhost:11434``. Empty variables count as unset.
        """
        env = os.environ if environ is None else environ
        values = {k: v for k, v in env.items() if k.startswith(_ENV_PREFIX) and v.strip()}
        _warn_unknown_env(values)
        data: dict[str, Any] = {}
        origin = _Origin()
        config_file = values.get(ENV_CONFIG)
        if config_file:
            raw, origin = _read_yaml(config_file.strip(), via=ENV_CONFIG)
            section, origin.prefix = _pool_section(raw, None, source=f"{ENV_CONFIG}={config_file.strip()}")
            data = dict(section)
        if ENV_INSTANCES in values:
            data["instances"] = _split_entries(values[ENV_INSTANCES])
            origin.env.append((("instances",), ENV_INSTANCES))
        elif "instances" not in data:
            logger.info("no %s or %s: using http://localhost:11434", ENV_INSTANCES, ENV_CONFIG)
            data["instances"] = ["http://localhost:11434"]
        for var, loc in ENV_VARIABLES.items():
            if var in values and loc[:1] in (("load_balancing",), ("timeouts",)):
                data = _set_path(data, loc, values[var].strip())
                origin.env.append((loc, var))
        if ENV_MAX_CONCURRENT in values and isinstance(data.get("instances"), list):
            data["instances"] = [
                _with_default(item, "max_concurrent", values[ENV_MAX_CONCURRENT].strip())
                for item in data["instances"]
            ]
            origin.env.append((("instances", "*", "max_concurrent"), ENV_MAX_CONCURRENT))
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


# --------------------------------------------------------------------------------------------------
# Sources: mappings, YAML, environment


def _is_pool_type(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().replace("-", "_") == "ollama_pool"


def _pool_section(
    data: Any, provider: str | None, *, source: str
) -> tuple[Mapping[str, Any], tuple[str, ...]]:
    """The pool's mapping inside ``data`` and its location (``()`` or ``("providers", name)``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping with instances: (and load_balancing:), got {_show(data)}",
            field="instances",
            value=data if not isinstance(data, (list, dict)) else type(data).__name__,
            hint="e.g. {'instances': [{'url': 'http://localhost:11434'}]}",
        )
    prefix: tuple[str, ...] = ()
    section: Any = data
    if "instances" not in data and ("providers" in data or provider is not None):
        providers = data.get("providers")
        if not isinstance(providers, Mapping):
            raise ConfigError(
                f"{source}: providers: expected a mapping of name to provider, got {_show(providers)}",
                field="providers",
                hint="providers: {ollama: {type: ollama_pool, instances: [...]}}",
            )
        pools = [
            name for name, p in providers.items() if isinstance(p, Mapping) and _is_pool_type(p.get("type"))
        ]
        if provider is not None:
            if provider not in providers:
                raise ConfigError(
                    f"{source}: no provider named {provider!r} under providers "
                    f"(found: {', '.join(map(str, providers))})",
                    field=f"providers.{provider}",
                    value=provider,
                )
            name = provider
        elif len(pools) == 1:
            name = pools[0]
        elif not pools:
            found = ", ".join(
                f"{n} (type {p.get('type')!r})" if isinstance(p, Mapping) else str(n)
                for n, p in providers.items()
            )
            raise ConfigError(
                f"{source}: no provider with type: ollama_pool under providers (found: {found or 'none'})",
                field="providers",
                hint="add type: ollama_pool to the pool's provider entry",
            )
        else:
            raise ConfigError(
                f"{source}: several ollama_pool providers ({', '.join(pools)}); pick one with provider=...",
                field="providers",
                value=pools,
            )
        prefix = ("providers", str(name))
        section = providers[name]
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"{source}: providers.{name}: expected a mapping, got {_show(section)}",
                field=f"providers.{name}",
            )
    if "type" in section:
        if not _is_pool_type(section["type"]):
            where = ".".join((*prefix, "type"))
            raise ConfigError(
                f"{source}: {where} = {_show(section['type'])}: this pool's type must be ollama_pool",
                field=where,
                value=section["type"],
            )
        section = {k: v for k, v in section.items() if k != "type"}
    return section, prefix


def _read_yaml(path: str | os.PathLike[str], via: str | None = None) -> tuple[Any, _Origin]:
    import yaml

    label = f"{via}: " if via else ""
    file = Path(path).expanduser()
    shown = os.fspath(path)
    error: ConfigError | None = None
    text = ""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "check the path"
        if "://" in str(path):
            hint = "this looks like a URL, not a file: pass {'instances': ['" + _mask_url(str(path)) + "']}"
        error = ConfigError(
            f"{label}configuration file not found: {shown}", field=via or shown, value=shown, hint=hint
        )
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        error = ConfigError(
            f"{label}cannot read configuration file {file}: {reason}", field=via or shown, value=str(file)
        )
    if error is not None:
        raise error
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
            problem += f" ({context} at line {context_mark.line + 1})"
        error = ConfigError(
            f"{label}{file}{where}: malformed YAML: {problem}",
            field=via or shown,
            value=str(file),
            hint="fix the YAML syntax there (indentation, a missing ':', an unclosed quote or bracket)",
        )
    if error is not None:
        raise error
    if data is None:
        raise ConfigError(
            f"{label}{file} is empty",
            field=via or shown,
            value=str(file),
            hint="expected instances: (and load_balancing:)",
        )
    return data, _Origin(file=str(file), node=root, via=via)


_ENV_PREFIX = "GLEITZEIT_OLLAMA_"
ENV_CONFIG = "GLEITZEIT_OLLAMA_CONFIG"
ENV_INSTANCES = "GLEITZEIT_OLLAMA_INSTANCES"
ENV_MAX_CONCURRENT = "GLEITZEIT_OLLAMA_MAX_CONCURRENT"


def _env_table() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {
        ENV_CONFIG: (),
        ENV_INSTANCES: ("instances",),
        ENV_MAX_CONCURRENT: ("instances", "*", "max_concurrent"),
    }
    for name in LoadBalancingConfig.model_fields:
        if name != "circuit_breaker":
            table[_ENV_PREFIX + name.upper()] = ("load_balancing", name)
    for name in CircuitBreakerConfig.model_fields:
        table[_ENV_PREFIX + "CIRCUIT_BREAKER_" + name.upper()] = ("load_balancing", "circuit_breaker", name)
    for name in TimeoutConfig.model_fields:
        table[_ENV_PREFIX + "TIMEOUT_" + name.upper()] = ("timeouts", name)
    return table


ENV_VARIABLES: Mapping[str, tuple[str, ...]] = types.MappingProxyType(_env_table())
"""Every variable :meth:`PoolConfig.from_env` reads, with the field it sets (``()`` for the YAML file)."""


def _warn_unknown_env(values: Mapping[str, str]) -> None:
    for name in values:
        if name not in ENV_VARIABLES:
            close = difflib.get_close_matches(name, list(ENV_VARIABLES), n=1)
            logger.warning(
                "ignoring unknown environment variable %s%s",
                name,
                f"; did you mean {close[0]}?" if close else "",
            )


def _split_entries(value: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", value.strip()) if part]


def _set_path(data: Mapping[str, Any], loc: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``loc`` set; sections that are not mappings are replaced."""
    out = dict(data)
    if len(loc) == 1:
        out[loc[0]] = value
    else:
        inner = out.get(loc[0])
        out[loc[0]] = _set_path(inner if isinstance(inner, Mapping) else {}, loc[1:], value)
    return out


def _with_default(item: Any, key: str, value: Any) -> Any:
    if isinstance(item, str):
        try:
            item = _parse_instance_string(item)
        except _Invalid:
            return item  # validation reports it, with its position
    if isinstance(item, Mapping) and key not in item:
        return {**item, key: value}
    return item


# --------------------------------------------------------------------------------------------------
# From pydantic's errors to one ConfigError


@dataclass
class _Origin:
    """Where the validated data came from, to point each problem at its source."""

    file: str | None = None
    node: Any = None  # the YAML document's node tree, for line numbers
    via: str | None = None  # the environment variable that named the file
    prefix: tuple[str, ...] = ()  # where the pool section sits in the document
    env: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)  # loc pattern -> variable

    def env_var(self, loc: tuple[Any, ...]) -> str | None:
        """The variable that set ``loc`` (the most specific pattern wins)."""
        matches = [
            (len(pattern), var)
            for pattern, var in self.env
            if len(pattern) <= len(loc) and all(p in ("*", s) for p, s in zip(pattern, loc, strict=False))
        ]
        return max(matches)[1] if matches else None

    def line(self, loc: tuple[Any, ...]) -> int | None:
        node = self.node
        if node is None:
            return None
        line: int = node.start_mark.line + 1
        for seg in (*self.prefix, *loc):
            if getattr(node, "id", None) == "mapping":
                match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(seg)), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif getattr(node, "id", None) == "sequence" and isinstance(seg, int) and seg < len(node.value):
                node = node.value[seg]
                line = node.start_mark.line + 1
            else:
                break
        return line


_MISSING = object()


@dataclass
class _Problem:
    loc: tuple[Any, ...]
    text: str
    hint: str | None = None
    value: Any = _MISSING
    show_value: bool = True  # False when the text already names the value


def _path(loc: Iterable[Any]) -> str:
    out = ""
    previous: Any = None
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif previous == "headers":
            out += f"[{seg!r}]"
        else:
            out += ("." if out else "") + str(seg)
        previous = seg
    return out


def _secret(loc: tuple[Any, ...]) -> bool:
    return "headers" in loc


def _show(value: Any, loc: tuple[Any, ...] = ()) -> str:
    """A value for a message: short, with secrets masked, never a whole mapping."""
    if _secret(loc):
        return "'***'"
    if isinstance(value, str):
        text = repr(_mask_url(value))
        return text if len(text) <= 80 else text[:76] + "...'"
    if value is None or isinstance(value, (bool, int, float, enum.Enum)):
        return repr(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
        text = _mask_url(repr(list(value)))
        return text if len(text) <= 80 else f"a list of {len(value)} items"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the data at ``loc`` (for field names in unknown-field errors)."""
    current: Any = root
    for seg in loc:
        if isinstance(seg, int):
            continue
        if (
            not (isinstance(current, type) and issubclass(current, BaseModel))
            or seg not in current.model_fields
        ):
            return None
        current = _model_in(current.model_fields[seg].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


_SYNONYMS = {
    "base_url": "url",
    "host": "url",
    "address": "url",
    "endpoint": "url",
    "name": "id",
    "concurrency": "max_concurrent",
    "max_parallel": "max_concurrent",
    "num_parallel": "max_concurrent",
    "parallel": "max_concurrent",
    "model": "models",
    "tag": "tags",
    "header": "headers",
    "instance": "instances",
    "servers": "instances",
}


def _suggest(name: str, model: type[BaseModel]) -> str | None:
    valid = list(model.model_fields)
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in valid:
        return key
    if _SYNONYMS.get(key) in valid:
        return _SYNONYMS[key]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return close[0]
    return _nested_path(model, key)


def _nested_path(model: type[BaseModel], key: str) -> str | None:
    """A field written one level too high: ``strategy`` at the top is ``load_balancing.strategy``."""
    for name, info in model.model_fields.items():
        sub = _model_in(info.annotation)
        if sub is None or info.is_required():  # not into instances: a URL at the top is another mistake
            continue
        if key in sub.model_fields:
            return f"{name}.{key}"
        deeper = _nested_path(sub, key)
        if deeper:
            return f"{name}.{deeper}"
    return None


_TIMEOUT_FIELDS = frozenset(TimeoutConfig.model_fields)
_SECONDS_HINT = re.compile(r"timeout|interval|backoff|^(connect|first_byte|idle|total)$")


def _describe(err: Mapping[str, Any], root: type[BaseModel]) -> _Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input", _MISSING)
    name = str(loc[-1]) if loc and not isinstance(loc[-1], int) else ""

    if kind == "value_error" and isinstance(ctx.get("error"), _Invalid):
        exc: _Invalid = ctx["error"]
        if exc.sub_loc:
            loc = loc + exc.sub_loc
            value = exc.value
        return _Problem(loc, exc.text, exc.hint, value, exc.show_value)
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        valid = list(model.model_fields) if model else []
        suggestion = _suggest(str(loc[-1]), model) if model else None
        text = "unknown field" + (f"; did you mean {suggestion!r}?" if suggestion else "")
        return _Problem(loc, text, f"valid fields here: {', '.join(valid)}" if valid else None)
    if kind == "missing":
        hints = {"url": _URL_HINT, "instances": "e.g. instances: [{url: http://localhost:11434}]"}
        return _Problem(loc, "required", hints.get(name))
    if kind == "json_invalid":  # the raw text may hold header values: never echo it
        return _Problem(loc, f"invalid JSON: {ctx.get('error', 'cannot parse')}")
    if kind == "frozen_instance":
        return _Problem(loc, "cannot be changed: configuration is immutable", "use model_copy(update=...)")
    limits = {
        "greater_than": ("must be greater than", "gt"),
        "greater_than_equal": ("must be at least", "ge"),
        "less_than": ("must be less than", "lt"),
        "less_than_equal": ("must be at most", "le"),
    }
    if kind in limits:
        words, key = limits[kind]
        return _Problem(loc, f"{words} {ctx.get(key)}", None, value)
    seconds = " of seconds" if _SECONDS_HINT.search(name) else ""
    texts = {
        "int_parsing": ("expected a whole number", None),
        "int_type": ("expected a whole number", None),
        "int_from_float": ("expected a whole number", None),
        "float_parsing": (f"expected a number{seconds}", None),
        "float_type": (f"expected a number{seconds}", None),
        "finite_number": (
            "expected a finite number",
            "use none for no limit" if name in _TIMEOUT_FIELDS else None,
        ),
        "bool_parsing": ("expected true or false", "also accepted: yes/no, on/off, 1/0"),
        "bool_type": ("expected true or false", "also accepted: yes/no, on/off, 1/0"),
        "string_type": ("expected a string", None),
        "list_type": ("expected a list", None),
        "dict_type": ("expected a mapping", None),
        "model_type": ("expected a mapping", None),
        "model_attributes_type": ("expected a mapping", None),
    }
    text, hint = texts.get(
        kind, (str(err.get("msg", "invalid value")).replace("Input should be", "expected"), None)
    )
    return _Problem(loc, text, hint, value)


def _config_error(exc: ValidationError, root: type[BaseModel], origin: _Origin | None = None) -> ConfigError:
    """One ConfigError for all of pydantic's errors, each pointed at its source (field, variable, line)."""
    origin = origin or _Origin()
    file = origin.file and origin.file + (f" (from {origin.via})" if origin.via else "")
    lines: list[str] = []
    first: tuple[str | None, Any, str | None] | None = None
    for err in exc.errors(include_url=False):
        problem = _describe(err, root)
        shown_path = _path((*origin.prefix, *problem.loc))
        var = origin.env_var(problem.loc)
        if var is not None:
            where = var
            if var == ENV_INSTANCES and len(problem.loc) > 1 and isinstance(problem.loc[1], int):
                where += f" entry {problem.loc[1] + 1}"
            where += f" ({_path(problem.loc)})"
            field_name: str | None = var
        else:
            where = shown_path or root.__name__
            field_name = shown_path or None
            line = origin.line(problem.loc) if file else None
            if line:
                where = f"line {line}: {where}"
        text = where
        if problem.value is not _MISSING and problem.show_value:
            text += f" = {_show(problem.value, problem.loc)}"
        text += f": {problem.text}"
        if problem.hint:
            text += (" " if problem.text.endswith("?") else "; ") + problem.hint
        lines.append(text)
        if first is None:
            value = problem.value if problem.value is not _MISSING else None
            if _secret(problem.loc):
                value = "***"
            elif isinstance(value, str):
                value = _mask_url(value)
            elif not isinstance(value, (int, float, bool, enum.Enum, type(None))):
                value = _show(value)  # a mapping or list may hold header values: keep only a summary
            first = (field_name, value, problem.hint)
    assert first is not None
    if len(lines) == 1:
        message = lines[0]
        if file:
            message = f"{file}{',' if message.startswith('line ') else ':'} {message}"
    else:
        source = file or "the pool configuration"
        message = f"{len(lines)} problems in {source}:\n" + "\n".join(f"  - {line}" for line in lines)
    return ConfigError(message, field=first[0], value=first[1], hint=first[2])
