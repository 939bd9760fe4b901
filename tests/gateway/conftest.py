"""A real gateway (uvicorn on a free loopback port) over emulated Ollama servers."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gateway_server import GatewayServer

from gleitzeit_llm.gateway import GatewaySettings
from gleitzeit_llm.testing import OllamaEmulator

GatewayFactory = Callable[..., GatewayServer]


@pytest.fixture
def start_gateway() -> Iterator[GatewayFactory]:
    """``start_gateway(instances, **settings)``: a started gateway over ``instances`` (URLs or
    instance mappings; or ``config=`` a whole pool mapping), stopped after the test."""
    started: list[GatewayServer] = []

    def start(
        instances: Any = None, *, config: dict[str, Any] | None = None, **settings: Any
    ) -> GatewayServer:
        pool = config if config is not None else {"instances": list(instances)}
        server = GatewayServer(pool, GatewaySettings(**settings)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def two(ollama_emulators: Callable[..., list[OllamaEmulator]]) -> list[OllamaEmulator]:
    return ollama_emulators(2)


@pytest.fixture
def gateway(start_gateway: GatewayFactory, two: list[OllamaEmulator]) -> GatewayServer:
    """A gateway over two emulators (``gateway.emulators``)."""
    server = start_gateway([e.url for e in two])
    server.emulators = two  # type: ignore[attr-defined]
    return server


def _is_http_client(value: Any) -> bool:
    # httpx's clients, or httpx2's (the fork the openai SDK ships with)
    return any(
        cls.__name__ in ("Client", "AsyncClient") and cls.__module__.split(".")[0] in ("httpx", "httpx2")
        for cls in type(value).__mro__
    )


def _httpx_clients(owner: Any, depth: int = 0) -> list[Any]:
    """The httpx clients an SDK object holds (ollama, openai, LangChain and LlamaIndex objects
    keep theirs one or two attributes down)."""
    if _is_http_client(owner):
        return [owner]
    if owner is None or depth > 3:
        return []
    inner = []
    for name in ("_client", "_async_client", "client", "async_client"):
        try:
            inner.append(getattr(owner, name, None))
        except Exception:  # a pydantic private attribute never set
            continue
    return [found for value in inner for found in _httpx_clients(value, depth + 1)]


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """``closing(obj)``: an SDK object whose httpx clients are closed after the test (those
    libraries leave theirs open, and an unclosed socket is a ResourceWarning here)."""
    owners: list[Any] = []

    def register(owner: Any) -> Any:
        owners.append(owner)
        return owner

    yield register
    for client in {id(c): c for owner in owners for c in _httpx_clients(owner)}.values():
        if hasattr(client, "aclose"):
            await client.aclose()
        else:
            client.close()
