"""What the store tests share: managers on a real Redis standing in for processes (each has its
own store, connections and process token), and polling with a deadline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gleitzeit_llm import OllamaPoolManager

from .checks import MODEL, eventually

__all__ = ["INSTANCES", "MODEL", "eventually", "pools"]

# No request reaches these: the tests reserve and release slots through the manager.
INSTANCES = [{"id": "a", "url": "http://127.0.0.1:9", "max_concurrent": 2}]


@pytest.fixture
def pools(redis_server: Any) -> Iterator[Callable[..., OllamaPoolManager]]:
    """``pools(**shared_state overrides, load_balancing=...)``: a started manager on Redis."""
    made: list[OllamaPoolManager] = []

    def make(
        load_balancing: dict[str, Any] | None = None, instances: list[Any] = INSTANCES, **shared: Any
    ) -> OllamaPoolManager:
        manager = OllamaPoolManager(
            instances=instances,
            load_balancing=load_balancing,
            shared_state={"url": redis_server.url, **shared},
            health_checks=False,
        )
        manager.start()
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close_sync()
