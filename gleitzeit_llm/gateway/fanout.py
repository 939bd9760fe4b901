"""One request to every instance (or those a tag header selects), for the routes whose answer is
the pool's, not one instance's: ``/api/tags``, ``/api/ps``, ``/api/version`` and, with
``--allow-admin``, model management."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gleitzeit_llm.hints import RoutingHints

if TYPE_CHECKING:
    from gleitzeit_llm.ollama import AsyncOllamaTransport
    from gleitzeit_llm.provider import OllamaPoolProvider
    from gleitzeit_llm.routing.instance import OllamaInstance

__all__ = ["each_instance", "selected"]

T = TypeVar("T")


def selected(provider: OllamaPoolProvider, hints: RoutingHints) -> list[OllamaInstance]:
    """The instances the tag hints select (all without tags), in configuration order."""
    wanted = {tag.lower() for tag in hints.instance_tags or ()}
    if hints.require_gpu:
        wanted.add("gpu")
    return [inst for inst in provider.manager.instances if wanted <= inst.tags]


async def each_instance(
    provider: OllamaPoolProvider,
    instances: Sequence[OllamaInstance],
    work: Callable[[AsyncOllamaTransport], Awaitable[T]],
) -> list[tuple[str, T | Exception]]:
    """``work(transport)`` on every instance at once: (instance id, result or error), in order."""

    async def one(inst: OllamaInstance) -> T | Exception:
        try:
            return await work(await provider._connections.loop_transport(inst))
        except Exception as exc:  # one instance's failure is its entry, not the whole answer's
            return exc

    results: list[Any] = await asyncio.gather(*(one(inst) for inst in instances))
    return [(inst.id, result) for inst, result in zip(instances, results, strict=True)]
