"""Fixtures of the LlamaIndex integration tests: emulated pools, LLMs and embeddings that are
closed after each test, and a recording event handler on LlamaIndex's root dispatcher."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool

Pool = tuple[list[OllamaEmulator], list[dict[str, Any]]]


@pytest.fixture
def pool(ollama_emulators: Callable[..., list[OllamaEmulator]]) -> Callable[..., Pool]:
    """``pool(n, tags=[[...], ...], **emulator_kwargs)`` -> (emulators, instance dicts with ids e0, e1...)."""

    def make(n: int = 2, *, tags: list[list[str]] | None = None, **kwargs: Any) -> Pool:
        emulators = ollama_emulators(n, **kwargs)
        instances = [
            {"id": f"e{i}", "url": emu.url, "tags": (tags[i] if tags else [])}
            for i, emu in enumerate(emulators)
        ]
        return emulators, instances

    return make


@pytest.fixture
def quiet_pool() -> Iterator[Callable[..., OllamaPoolProvider]]:
    """``quiet_pool(instances, **load_balancing)`` -> a provider without background health checks
    (so only the test's own calls change what the pool knows), closed after the test."""
    made: list[OllamaPoolProvider] = []

    def make(instances: list[dict[str, Any]], **load_balancing: Any) -> OllamaPoolProvider:
        provider = OllamaPoolProvider(instances=instances, load_balancing=load_balancing, health_checks=False)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close_sync()


@pytest.fixture
def make_llm() -> Iterator[Callable[..., OllamaPool]]:
    """``make_llm(**fields)`` -> an OllamaPool (model llama3.2 unless given), closed after the test."""
    made: list[OllamaPool] = []

    def make(**fields: Any) -> OllamaPool:
        fields.setdefault("model", "llama3.2")
        llm = OllamaPool(**fields)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


@pytest.fixture
def make_embedding() -> Iterator[Callable[..., OllamaPoolEmbedding]]:
    """``make_embedding(**fields)`` -> an OllamaPoolEmbedding (nomic-embed-text), closed after the test."""
    made: list[OllamaPoolEmbedding] = []

    def make(**fields: Any) -> OllamaPoolEmbedding:
        fields.setdefault("model_name", "nomic-embed-text")
        embedding = OllamaPoolEmbedding(**fields)
        made.append(embedding)
        return embedding

    yield make
    for embedding in made:
        embedding.close()


class Recorder(BaseEventHandler):
    """Keeps every instrumentation event it sees."""

    events: list[BaseEvent] = []

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, cls: type[BaseEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


@pytest.fixture
def attach() -> Iterator[Callable[[BaseEventHandler], BaseEventHandler]]:
    """``attach(handler)`` adds an event handler to the root dispatcher for this test only."""
    root = get_dispatcher()
    added: list[BaseEventHandler] = []

    def add(handler: BaseEventHandler) -> BaseEventHandler:
        root.add_event_handler(handler)
        added.append(handler)
        return handler

    yield add
    root.event_handlers = [h for h in root.event_handlers if not any(h is a for a in added)]


@pytest.fixture
def recorder(attach: Callable[[BaseEventHandler], BaseEventHandler]) -> Recorder:
    return attach(Recorder(events=[]))  # type: ignore[return-value]
