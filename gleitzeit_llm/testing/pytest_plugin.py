"""pytest fixtures for emulated Ollama servers.

Enable with ``pytest_plugins = ["gleitzeit_llm.testing.pytest_plugin"]`` in a ``conftest.py``.

* ``ollama_emulator``: one started :class:`OllamaEmulator` with the default models
  (``llama3.2``, ``qwen3``, ``nomic-embed-text``) running 100x faster than modelled time.
* ``ollama_emulators``: a factory ``make(n=1, **kwargs) -> list[OllamaEmulator]``; every
  emulator it made is closed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gleitzeit_llm.testing.emulator import OllamaEmulator

__all__ = ["FAST_TIME_SCALE", "ollama_emulator", "ollama_emulators"]

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
