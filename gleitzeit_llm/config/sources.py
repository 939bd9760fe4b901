"""Where a pool configuration comes from: a mapping, a YAML file, the environment.

Each source returns the data to validate and an :class:`~.errors._Origin` that lets errors point
back at it (the ``providers:`` entry, the file and line, the variable). :class:`~.pool.PoolConfig`'s
``from_dict``/``from_yaml``/``from_env`` validate what these return.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import types
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from gleitzeit_llm.config.errors import _Invalid, _Origin, _show
from gleitzeit_llm.config.models import (
    CircuitBreakerConfig,
    LoadBalancingConfig,
    SharedStateConfig,
    TimeoutConfig,
    _parse_instance_string,
    _split_entries,
)
from gleitzeit_llm.config.yamlfile import read_yaml
from gleitzeit_llm.errors import ConfigError
from gleitzeit_llm.ollama.urls import redact_url

__all__ = [
    "ENV_CONFIG",
    "ENV_INSTANCES",
    "ENV_MAX_CONCURRENT",
    "ENV_OLLAMA_HOST",
    "ENV_VARIABLES",
    "ollama_host_url",
]

logger = logging.getLogger("gleitzeit_llm.config")  # the documented name, whichever module warns

_ENV_PREFIX = "GLEITZEIT_OLLAMA_"
ENV_CONFIG = "GLEITZEIT_OLLAMA_CONFIG"
ENV_INSTANCES = "GLEITZEIT_OLLAMA_INSTANCES"
ENV_MAX_CONCURRENT = "GLEITZEIT_OLLAMA_MAX_CONCURRENT"
#: Ollama's own variable, read as its client reads it when no GLEITZEIT_OLLAMA_* names the servers.
ENV_OLLAMA_HOST = "OLLAMA_HOST"


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
    for name in SharedStateConfig.model_fields:
        table[_ENV_PREFIX + "SHARED_STATE_" + name.upper()] = ("shared_state", name)
    return table


ENV_VARIABLES: Mapping[str, tuple[str, ...]] = types.MappingProxyType(_env_table())
"""Every variable :meth:`PoolConfig.from_env` reads, with the field it sets (``()`` for the YAML file)."""


def mapping_source(mapping: Mapping[str, Any], provider: str | None) -> tuple[Mapping[str, Any], _Origin]:
    """The pool section of ``mapping`` (the guide's dict form, or a workflow's ``providers:``)."""
    section, prefix = _pool_section(mapping, provider, source="configuration")
    return section, _Origin(prefix=prefix)


def yaml_source(path: str | os.PathLike[str], provider: str | None) -> tuple[Mapping[str, Any], _Origin]:
    """The pool section of the YAML file at ``path``."""
    data, origin = _read_yaml(path)
    section, origin.prefix = _pool_section(data, provider, source=origin.file or "")
    return section, origin


def env_source(environ: Mapping[str, str] | None) -> tuple[dict[str, Any], _Origin]:
    """The pool the ``GLEITZEIT_OLLAMA_*`` variables describe (see :data:`ENV_VARIABLES`)."""
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
        host = env.get(ENV_OLLAMA_HOST, "").strip()
        if host:
            data["instances"] = [ollama_host_url(host)]
            origin.env.append((("instances",), ENV_OLLAMA_HOST))
        else:
            logger.info(
                "no %s, %s or %s: using http://localhost:11434", ENV_INSTANCES, ENV_CONFIG, ENV_OLLAMA_HOST
            )
            data["instances"] = ["http://localhost:11434"]
    for var, loc in ENV_VARIABLES.items():
        if var in values and loc[:1] in (("load_balancing",), ("timeouts",), ("shared_state",)):
            data = _set_path(data, loc, values[var].strip())
            origin.env.append((loc, var))
    if ENV_MAX_CONCURRENT in values and isinstance(data.get("instances"), list):
        data["instances"] = [
            _with_default(item, "max_concurrent", values[ENV_MAX_CONCURRENT].strip())
            for item in data["instances"]
        ]
        origin.env.append((("instances", "*", "max_concurrent"), ENV_MAX_CONCURRENT))
    return data, origin


def ollama_host_url(host: str) -> str:
    """The server URL an ``OLLAMA_HOST`` value means, by the rules of the ``ollama`` client
    (``ollama._client._parse_host``): no scheme is ``http://``; the port defaults to 11434 without
    a scheme, else to 80/443; no host is ``127.0.0.1``; a path is kept without its end ``/``; an
    IPv6 address gets its brackets.

    >>> ollama_host_url("gpu1"), ollama_host_url(":8080"), ollama_host_url("https://h/ollama/")
    ('http://gpu1:11434', 'http://127.0.0.1:8080', 'https://h:443/ollama')
    """
    port = 11434
    scheme, _, hostport = host.partition("://")
    if not hostport:
        scheme, hostport = "http", host
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    split = urlsplit(f"{scheme}://{hostport}")
    name = split.hostname or "127.0.0.1"
    try:
        port = split.port or port
    except ValueError as exc:  # a port out of range or not a number: the variable's fault
        raise ConfigError(
            f"{ENV_OLLAMA_HOST} = {redact_url(host)!r}: {exc}", field="instances", value=redact_url(host)
        ) from None
    try:
        if isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address):
            name = f"[{name}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{name}:{port}/{path}" if path else f"{scheme}://{name}:{port}"


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
    shown = os.fspath(path)
    label = f"{via}: " if via else ""
    hint = "check the path"
    if "://" in shown:
        hint = "this looks like a URL, not a file: pass {'instances': ['" + redact_url(shown) + "']}"
    document = read_yaml(path, field=via or shown, label=label, not_found_hint=hint)
    if document.data is None:
        raise ConfigError(
            f"{label}{document.path} is empty",
            field=via or shown,
            value=document.path,
            hint="expected instances: (and load_balancing:)",
        )
    return document.data, _Origin(file=document.path, yaml=document, via=via)


def _warn_unknown_env(values: Mapping[str, str]) -> None:
    for name in values:
        if name not in ENV_VARIABLES:
            close = difflib.get_close_matches(name, list(ENV_VARIABLES), n=1)
            logger.warning(
                "ignoring unknown environment variable %s%s",
                name,
                f"; did you mean {close[0]}?" if close else "",
            )


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
