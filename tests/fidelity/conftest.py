"""Fidelity tests drive third-party clients; this closes the HTTP clients they leave open.

Those libraries never close their ``httpx`` clients, and an unclosed pooled socket is a
``ResourceWarning`` (an error in this suite) once it is garbage-collected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gleitzeit_llm.ownership import ProviderOwner

_ATTRIBUTES = ("_client", "_async_client")


def _http_clients(owner: Any, depth: int = 0) -> list[httpx.Client | httpx.AsyncClient]:
    if isinstance(owner, (httpx.Client, httpx.AsyncClient)):
        return [owner]
    if depth > 2 or owner is None:
        return []
    found: list[httpx.Client | httpx.AsyncClient] = []
    for name in _ATTRIBUTES:
        try:
            value = getattr(owner, name, None)
        except Exception:  # pydantic private attributes that were never set
            value = None
        found += _http_clients(value, depth + 1)
    return found


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """``closing(obj)`` registers an ollama/LangChain/LlamaIndex object; its clients close after the
    test (and a pool class of ours closes the pool it built)."""
    owners: list[Any] = []

    def register(owner: Any) -> Any:
        owners.append(owner)
        return owner

    yield register
    for owner in owners:
        if isinstance(owner, ProviderOwner):
            await owner.aclose()
            continue
        for client in _http_clients(owner):
            if isinstance(client, httpx.AsyncClient):
                await client.aclose()
            else:
                client.close()
