"""Who closes a provider that framework objects use: the object that built it, never a borrower.

Every adapter (LangChain's ``ChatOllamaPool`` and ``OllamaPoolEmbeddings``, LlamaIndex's
``OllamaPool`` and ``OllamaPoolEmbedding``) holds its provider through a :class:`ProviderHandle`.
A provider built from the object's own arguments is owned: it is closed by the object's
``close()``, or when the object is garbage-collected, or at interpreter exit (a dropped object
must not leave health-check threads and sockets behind). A provider given as ``pool=`` is
borrowed: its creator closes it, however many objects used it.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from gleitzeit_llm.options import provider_from_options
from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["POOL_FIELDS", "ProviderHandle", "ProviderOwner", "open_provider", "provider_of"]


def _close_quietly(provider: OllamaPoolProvider) -> None:
    with contextlib.suppress(Exception):
        provider.close_sync()


class ProviderHandle:
    """The provider of one or more framework objects (copies of an object share their handle).

    An owned provider is closed when the last object holding this handle is collected, at
    interpreter exit, or by :meth:`close`; a borrowed one is never closed here.
    """

    __slots__ = ("__weakref__", "_finalizer", "owned", "provider")

    def __init__(self, provider: OllamaPoolProvider, *, owned: bool) -> None:
        self.provider = provider
        self.owned = owned
        # The finalizer holds the provider, not the handle: collecting the handle runs it.
        self._finalizer = weakref.finalize(self, _close_quietly, provider) if owned else None

    def close(self) -> None:
        """Close an owned provider (idempotent); a borrowed one is left alone."""
        if self._finalizer is not None:
            self._finalizer()

    async def aclose(self) -> None:
        """Close an owned provider, its connections on the running event loop included."""
        if self._finalizer is not None and self._finalizer.detach() is not None:
            await self.provider.close()

    # Copies of an object (model_copy, deepcopy) share the pool rather than cloning threads and sockets.
    def __copy__(self) -> ProviderHandle:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ProviderHandle:
        return self


def open_provider(*, request_timeout: float | None = None, **options: Any) -> ProviderHandle:
    """The handle for an object's pool arguments: ``options`` as
    :func:`~gleitzeit_llm.options.provider_from_options` takes them (owned unless ``pool`` is
    given). ``request_timeout`` is the Ollama client's one read timeout, which the pool splits
    into its first-byte and idle timeouts. No connection is made here."""
    if request_timeout is not None:
        if options.get("pool") is not None:
            raise ValueError("request_timeout: a setting of a pool of our own; a shared pool= keeps its own")
        options["timeouts"] = {
            **(options.get("timeouts") or {}),
            "first_byte": request_timeout,
            "idle": request_timeout,
        }
    provider, owned = provider_from_options(**options)
    return ProviderHandle(provider, owned=owned)


#: The fields in which LlamaIndex objects name their pool (the keywords of :func:`open_provider`).
POOL_FIELDS = (
    "pool",
    "instances",
    "config",
    "base_url",
    "load_balancing",
    "headers",
    "request_timeout",
    "shared_state",
)


def provider_of(obj: Any, fields: tuple[str, ...] = POOL_FIELDS) -> ProviderHandle:
    """The handle for the pool that ``obj``'s fields of these names describe."""
    return open_provider(**{name: getattr(obj, name) for name in fields})


class ProviderOwner:
    """Mixin of a framework object that holds its provider in ``self._handle``: ``provider``,
    ``close()`` and ``aclose()`` (each adapter declares ``_handle`` in its own model)."""

    _handle: ProviderHandle

    @property
    def provider(self) -> OllamaPoolProvider:
        """The pool this object's calls go to; pass it as ``pool=`` to share it with other objects."""
        return self._handle.provider

    def close(self) -> None:
        """Close the pool if this object built it (health checks, connections); a shared ``pool=``
        stays open."""
        self._handle.close()

    async def aclose(self) -> None:
        """Async :meth:`close`, which also closes the pool's connections on the running event loop."""
        await self._handle.aclose()
