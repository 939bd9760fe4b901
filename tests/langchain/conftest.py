"""Fixtures of the LangChain tests: emulated pools, and closing what a test built."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lc_support import FAST

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator

PoolFactory = Callable[..., tuple[OllamaPoolProvider, list[OllamaEmulator]]]


@pytest.fixture
def emulated_pool(ollama_emulators: Any) -> Iterator[PoolFactory]:
    """``make(n=3, tags=None, health_checks=True, load_balancing=None, **emulator_kwargs)``.

    Starts ``n`` emulators and one provider over them (instance ids ``ollama-1``...); everything
    is closed after the test.
    """
    providers: list[OllamaPoolProvider] = []

    def make(
        n: int = 3,
        *,
        tags: list[list[str]] | None = None,
        health_checks: bool = True,
        load_balancing: dict[str, Any] | None = None,
        **emulator_kwargs: Any,
    ) -> tuple[OllamaPoolProvider, list[OllamaEmulator]]:
        emulator_kwargs.setdefault("time_scale", FAST)
        emulators = ollama_emulators(n, **emulator_kwargs)
        instances = [
            {"id": f"ollama-{i}", "url": emu.url, "tags": (tags[i - 1] if tags else [])}
            for i, emu in enumerate(emulators, start=1)
        ]
        provider = OllamaPoolProvider(
            instances=instances, load_balancing=load_balancing, health_checks=health_checks
        )
        providers.append(provider)
        return provider, emulators

    yield make
    for provider in providers:
        provider.close_sync()


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """``closing(model)``: close a ChatOllamaPool/OllamaPoolEmbeddings (its own pool) after the test."""
    owned: list[Any] = []

    def register(model: Any) -> Any:
        owned.append(model)
        return model

    yield register
    for model in owned:
        model.close()
