"""A real gateway (uvicorn on a free loopback port) over emulated Ollama servers."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
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


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """``closing(client)``: an ollama/openai/httpx client whose httpx client is closed after the test
    (those libraries leave theirs open, an unclosed socket is a ResourceWarning)."""
    owners: list[Any] = []

    def register(owner: Any) -> Any:
        owners.append(owner)
        return owner

    yield register
    for owner in owners:
        for client in (owner, getattr(owner, "_client", None)):
            if isinstance(client, httpx.AsyncClient):
                await client.aclose()
            elif isinstance(client, httpx.Client):
                client.close()
            elif client is not None and hasattr(client, "close") and client is not owner:
                result = client.close()
                if hasattr(result, "__await__"):
                    await result
