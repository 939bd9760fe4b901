"""What the store tests share: managers on a real Redis standing in for processes (each has its
own store, connections and process token), and polling with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gleitzeit_llm import OllamaPoolManager

MODEL = "llama3.2"
# No request reaches these: the tests reserve and release slots through the manager.
INSTANCES = [{"id": "a", "url": "http://127.0.0.1:9", "max_concurrent": 2}]


def eventually(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``condition`` until it is truthy (its value), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


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
