"""``async with`` and ``with`` for the pool's long-lived objects, written once.

The manager and the provider both open with ``initialize()`` / ``initialize_sync()`` and close
with ``close()`` / ``close_sync()``; this mixin turns those into the context-manager protocols and
the ``closed`` flag.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Lifecycle"]

_L = TypeVar("_L", bound="Lifecycle")


class Lifecycle:
    """Mixin: ``async with obj`` runs ``initialize()``/``close()``, ``with obj`` runs
    ``initialize_sync()``/``close_sync()``; ``closed`` reads ``_closed``."""

    _closed: bool

    async def initialize(self) -> None:
        raise NotImplementedError

    def initialize_sync(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def close_sync(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _L) -> _L:
        await self.initialize()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __enter__(self: _L) -> _L:
        self.initialize_sync()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_sync()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`close_sync` was called."""
        return self._closed
