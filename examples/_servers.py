"""Shared plumbing of the examples: emulated Ollama servers, unless real ones are configured.

Every example asks for its servers like this::

    from _servers import MODEL, servers

    with servers(3, tags=[["gpu"], ["cpu"], ["cpu"]]) as instances:
        provider = OllamaPoolProvider(instances=instances)
        ...

``instances`` is a list of instance dicts (``id``, ``url``, ``models``, ``tags``, ``max_concurrent``,
...), exactly what ``OllamaPoolProvider(instances=...)`` and the YAML ``instances:`` section take.

* By default it starts emulated Ollama servers on 127.0.0.1 (``gleitzeit_llm.testing.OllamaEmulator``:
  real HTTP, Ollama's wire format, modelled time running 50x faster) and closes them at the end.
* With ``GLEITZEIT_OLLAMA_INSTANCES`` (or ``GLEITZEIT_OLLAMA_CONFIG``) set, it starts nothing and
  yields your servers: ``[i.model_dump() for i in PoolConfig.from_env().instances]``. Set
  ``GLEITZEIT_EXAMPLE_MODEL`` to a model your servers have if it is not ``llama3.2``.

This module is not part of the library; it only keeps the examples short.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from gleitzeit_llm import InstanceConfig, PoolConfig

__all__ = ["MODEL", "Servers", "emulated", "servers"]

#: The chat model the examples use (override with GLEITZEIT_EXAMPLE_MODEL for real servers).
MODEL = os.environ.get("GLEITZEIT_EXAMPLE_MODEL", "").strip() or "llama3.2"

#: Real seconds per modelled second: a 1 s model load takes 20 ms.
TIME_SCALE = 0.02

_INSTANCE_FIELDS = set(InstanceConfig.model_fields)


def emulated() -> bool:
    """True unless real servers are configured in the environment."""
    return not any(
        os.environ.get(name, "").strip() for name in ("GLEITZEIT_OLLAMA_INSTANCES", "GLEITZEIT_OLLAMA_CONFIG")
    )


class Servers(list):  # type: ignore[type-arg]
    """The instance dicts, plus ``emulators`` (instance id -> OllamaEmulator; empty for real servers)."""

    def __init__(self, instances: Sequence[dict[str, Any]], emulators: Mapping[str, Any]) -> None:
        super().__init__(instances)
        self.emulators = dict(emulators)

    @property
    def emulated(self) -> bool:
        return bool(self.emulators)


def _answer(request: Any) -> str:
    """Emulated replies that say what they answer (instead of the emulator's filler words)."""
    prompt = " ".join(request.prompt.split())
    if len(prompt) > 40:
        prompt = prompt[:37] + "..."
    return f"[emulated {request.model}] an answer to {prompt!r}"


@contextlib.contextmanager
def servers(
    n: int | Sequence[Mapping[str, Any]] = 3,
    *,
    models: Sequence[str] | None = None,
    loaded: Sequence[str] | None = None,
    tags: Sequence[Sequence[str]] | None = None,
    **emulator_kwargs: Any,
) -> Iterator[Servers]:
    """Yield instance dicts for ``n`` servers: emulated ones, or the configured real ones.

    ``n`` is a count, or one spec per server: a mapping whose instance fields (``id``, ``models``,
    ``tags``, ``weight``, ``max_concurrent``, ...) go into the instance dict and whose other keys
    (``tokens_per_second``, ``loaded``, ...) configure that server's emulator; a spec's ``models``
    are also what its emulator installs. For all servers at once: ``models`` (installed, not
    written into the instance dicts, so the pool discovers them; default llama3.2, qwen3,
    nomic-embed-text), ``loaded`` (resident from the start; default the first installed model),
    ``tags`` (one list per server) and ``emulator_kwargs``.

    With real servers the specs are ignored: the configured instances are used as they are.
    """
    if not emulated():
        instances = [i.model_dump() for i in PoolConfig.from_env().instances]
        names = ", ".join(f"{i['id']} ({i['url']})" for i in instances)
        print(f"Using {len(instances)} real Ollama server(s) from the environment: {names}")
        yield Servers(instances, {})
        return

    from gleitzeit_llm.testing import DEFAULT_MODELS, OllamaEmulator

    specs = [{} for _ in range(n)] if isinstance(n, int) else [dict(s) for s in n]
    emulators: dict[str, OllamaEmulator] = {}
    instances: list[dict[str, Any]] = []
    try:
        for number, spec in enumerate(specs, start=1):
            installed = list(spec.get("models") or models or DEFAULT_MODELS)
            resident = list(spec.pop("loaded", None) or loaded or installed[:1])
            instance = {k: spec.pop(k) for k in list(spec) if k in _INSTANCE_FIELDS}
            instance.setdefault("id", f"ollama-{number}")
            if tags is not None:
                instance.setdefault("tags", list(tags[number - 1]))
            options = {
                "time_scale": TIME_SCALE,
                "responder": _answer,
                **emulator_kwargs,
                **spec,
            }
            emulator = OllamaEmulator(models=installed, loaded=resident, **options).start()
            emulators[instance["id"]] = emulator
            instances.append({**instance, "url": emulator.url})
        print(
            f"Using {len(instances)} emulated Ollama servers on 127.0.0.1 "
            "(set GLEITZEIT_OLLAMA_INSTANCES to use real ones)"
        )
        yield Servers(instances, emulators)
    finally:
        for emulator in emulators.values():
            emulator.close()
