"""pytest fixtures for emulated Ollama servers.

Enable with ``pytest_plugins = ["gleitzeit_llm.testing.pytest_plugin"]`` in a ``conftest.py``.

* ``ollama_emulator``: one started :class:`OllamaEmulator` with the default models
  (``llama3.2``, ``qwen3``, ``nomic-embed-text``) running 100x faster than modelled time.
* ``ollama_emulators``: a factory ``make(n=1, **kwargs) -> list[OllamaEmulator]``; every
  emulator it made is closed after the test.
* ``redis_server``: a real, empty ``redis-server`` on a free loopback port for one test
  (:class:`~gleitzeit_llm.testing.redis_server.RedisServer`: ``.url``, ``.kill()``,
  ``.restart()``); skipped with the reason when no binary exists.
* ``redis_cluster``: a real three-master Redis Cluster on loopback, one per test module
  (:class:`~gleitzeit_llm.testing.redis_cluster.LocalRedisCluster`); skipped likewise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gleitzeit_llm.testing.emulator import OllamaEmulator
from gleitzeit_llm.testing.redis_cluster import LocalRedisCluster
from gleitzeit_llm.testing.redis_server import RedisServer, RedisServerUnavailable, find_redis_server

__all__ = ["FAST_TIME_SCALE", "ollama_emulator", "ollama_emulators", "redis_cluster", "redis_server"]

#: Modelled seconds run 100x faster in fixtures: a cold load of 1 s takes 10 ms.
FAST_TIME_SCALE = 0.01

EmulatorFactory = Callable[..., list[OllamaEmulator]]


@pytest.fixture
def ollama_emulator() -> Iterator[OllamaEmulator]:
    """One emulator on a free loopback port, fast time scale; closed after the test."""
    with OllamaEmulator(time_scale=FAST_TIME_SCALE) as emulator:
        yield emulator


@pytest.fixture
def ollama_emulators() -> Iterator[EmulatorFactory]:
    """``make(n=1, **kwargs)`` starts ``n`` emulators (``time_scale`` defaults to fast)."""
    made: list[OllamaEmulator] = []

    def make(n: int = 1, **kwargs: Any) -> list[OllamaEmulator]:
        kwargs.setdefault("time_scale", FAST_TIME_SCALE)
        batch = []
        for _ in range(n):
            emulator = OllamaEmulator(**kwargs)
            made.append(emulator)
            batch.append(emulator.start())
        return batch

    try:
        yield make
    finally:
        for emulator in made:
            emulator.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started, empty ``redis-server`` on 127.0.0.1 for this test; stopped after it.

    Fails (not skips) when the suite requires Redis (``GLEITZEIT_TEST_REQUIRE_REDIS=1``, set by
    ``make test``) and no binary exists, so CI cannot pass by skipping the shared-state tests.
    """
    _need_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A started three-master Redis Cluster on 127.0.0.1, shared by the tests of one module
    (a test that kills or reshards a node puts it back); fails or skips as ``redis_server``."""
    _need_redis_server()
    with LocalRedisCluster() as cluster:
        yield cluster


def _need_redis_server() -> None:
    try:
        find_redis_server()
    except RedisServerUnavailable as exc:
        if os.environ.get("GLEITZEIT_TEST_REQUIRE_REDIS") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
