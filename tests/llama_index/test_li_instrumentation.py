"""Pool events as LlamaIndex instrumentation events, and ``PrometheusEventHandler``'s metrics."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent, LLMCompletionStartEvent
from llama_index.llms.ollama import Ollama
from prometheus_client import CollectorRegistry

from gleitzeit_llm import AllInstancesFailedError
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool, PrometheusEventHandler, events
from llama_index.llms.gleitzeit.events import (
    PoolBreakerStateChangedEvent,
    PoolEmbeddingCallEvent,
    PoolFailoverEvent,
    PoolFallbackEvent,
    PoolRequestFinishedEvent,
    PoolRoutingDecisionEvent,
)

HELLO = [ChatMessage(role="user", content="Hello!")]
TRIP_AT_ONCE = {"circuit_breaker": {"failure_threshold": 1}, "strategy": "round_robin"}


# -- pool events ------------------------------------------------------------------------------


def test_pool_events_carry_the_span_of_their_call(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool], recorder: Any
) -> None:
    _, instances = pool(2)
    llm = make_llm(instances=instances)
    llm.chat(HELLO)
    list(llm.stream_chat(HELLO))
    starts = recorder.of(LLMChatStartEvent)
    routed = recorder.of(PoolRoutingDecisionEvent)
    finished = recorder.of(PoolRequestFinishedEvent)
    assert len(starts) == len(routed) == len(finished) == 2
    assert [e.span_id for e in routed] == [e.span_id for e in finished] == [e.span_id for e in starts]
    assert starts[0].span_id != starts[1].span_id
    assert finished[0].outcome == "success" and finished[0].instance in {"e0", "e1"}


async def test_async_calls_keep_their_spans_apart(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool], recorder: Any
) -> None:
    _, instances = pool(2)
    llm = make_llm(instances=instances)

    async def streamed() -> Any:
        return [c async for c in await llm.astream_chat(HELLO)]

    await asyncio.gather(*(llm.achat(HELLO) for _ in range(4)), *(streamed() for _ in range(4)))
    spans = {e.span_id for e in recorder.of(LLMChatStartEvent)}
    assert len(spans) == 8
    assert {e.span_id for e in recorder.of(PoolRequestFinishedEvent)} == spans


def test_failover_breaker_and_fallback_events(
    pool: Callable[..., Any],
    quiet_pool: Callable[..., Any],
    make_llm: Callable[..., OllamaPool],
    recorder: Any,
) -> None:
    emulators, instances = pool(2)
    llm = make_llm(pool=quiet_pool(instances, **TRIP_AT_ONCE))
    emulators[0].stop()
    answers = [llm.chat(HELLO) for _ in range(2)]
    assert all(a.raw["pool"]["instance_id"] == "e1" for a in answers)
    (failover,) = recorder.of(PoolFailoverEvent)
    assert failover.from_instance == "e0" and "InstanceFailedError" in failover.error
    opened = [e for e in recorder.of(PoolBreakerStateChangedEvent) if e.new == "open"]
    assert [e.instance for e in opened] == ["e0"]
    assert failover.span_id == opened[0].span_id == recorder.of(LLMChatStartEvent)[0].span_id
    llm.chat(HELLO, model="mixtral", fallback_model="llama3.2")
    (fallback,) = recorder.of(PoolFallbackEvent)
    assert (fallback.model, fallback.fallback_model) == (
        "mixtral:latest",
        "llama3.2:latest",
    )  # the pool names models by name:tag


def test_embedding_calls_are_events(
    pool: Callable[..., Any], make_embedding: Callable[..., OllamaPoolEmbedding], recorder: Any
) -> None:
    _, instances = pool(2)
    make_embedding(instances=instances).get_text_embedding_batch([f"text {i}" for i in range(6)])
    calls = recorder.of(PoolEmbeddingCallEvent)
    assert sorted(c.texts for c in calls) == [3, 3]
    assert {c.instance for c in calls} <= {"e0", "e1"} and all(c.attempts == 1 for c in calls)
    routed = recorder.of(PoolRoutingDecisionEvent)
    assert {e.span_id for e in routed} == {c.span_id for c in calls}  # worker threads keep the span


def test_forwarded_events_keep_every_field_of_the_pool_event() -> None:
    # The instrumentation events are declared field for field (typed for handlers' authors); a
    # field added to a pool event and not here would be dropped silently by pydantic.
    for pool_event, twin in events._CLASSES.items():
        fields = {f.name for f in dataclasses.fields(pool_event)}
        assert set(twin.model_fields) - set(events.PoolEvent.model_fields) == fields, twin.__name__
        assert twin.model_fields["kind"].default == pool_event.kind


# -- metrics ----------------------------------------------------------------------------------


@pytest.fixture
def registry(attach: Callable[..., Any]) -> CollectorRegistry:
    registry = CollectorRegistry()
    attach(PrometheusEventHandler(registry=registry))
    return registry


def calls(registry: CollectorRegistry, **labels: str) -> float:
    """The sum of gleitzeit_calls_total over the series matching ``labels``."""
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "gleitzeit_calls_total" and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_of_chat_completion_and_streams(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool], registry: CollectorRegistry
) -> None:
    _, instances = pool(1)
    llm = make_llm(instances=instances)
    chat_response = llm.chat(HELLO)
    llm.complete("Hello!", model="qwen3", think=False)
    chunks = list(llm.stream_chat(HELLO))
    base = {"gen_ai_provider_name": "ollama", "gleitzeit_instance": "e0", "outcome": "success"}
    assert calls(registry, gen_ai_operation_name="chat", gen_ai_request_model="llama3.2:latest", **base) == 2
    assert (
        calls(registry, gen_ai_operation_name="text_completion", gen_ai_request_model="qwen3:latest", **base)
        == 1
    )
    chat = {"gen_ai_operation_name": "chat", "gleitzeit_instance": "e0"}
    assert value(registry, "gen_ai_client_operation_duration_seconds_count", **chat) == 2
    assert value(registry, "gen_ai_client_token_usage_count", gen_ai_token_type="output", **chat) == 2
    output_tokens = chat_response.raw["eval_count"] + chunks[-1].raw["eval_count"]
    assert (
        value(registry, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **chat) == output_tokens
    )
    assert value(registry, "gen_ai_client_operation_time_to_first_chunk_seconds_count", **chat) == 1
    assert (
        value(registry, "gen_ai_client_operation_time_per_output_chunk_seconds_count", **chat)
        == len(chunks) - 1
    )
    assert value(registry, "gleitzeit_call_attempts_count", **chat) == 2


async def test_concurrent_async_calls_are_each_counted_once(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool], registry: CollectorRegistry, attach: Any
) -> None:
    _, instances = pool(2)
    llm = make_llm(instances=instances)

    async def streamed() -> Any:
        return [c async for c in await llm.astream_complete("hi")]

    await asyncio.gather(*(llm.achat(HELLO) for _ in range(6)), *(streamed() for _ in range(6)))
    assert calls(registry, gen_ai_operation_name="chat", outcome="success") == 6
    assert calls(registry, gen_ai_operation_name="text_completion", outcome="success") == 6
    assert value(registry, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == 6


def test_failovers_fallbacks_and_errors(
    pool: Callable[..., Any],
    quiet_pool: Callable[..., Any],
    make_llm: Callable[..., OllamaPool],
    registry: CollectorRegistry,
) -> None:
    emulators, instances = pool(2)
    llm = make_llm(pool=quiet_pool(instances, **TRIP_AT_ONCE))
    emulators[0].stop()
    llm.chat(HELLO)  # round robin starts at e0: one failover to e1
    assert value(registry, "gleitzeit_call_failovers_total", gleitzeit_instance="e1") == 1
    llm.chat(HELLO, model="mixtral", fallback_model="llama3.2")
    fallback = {"gen_ai_request_model": "mixtral:latest", "gleitzeit_fallback_model": "llama3.2:latest"}
    assert value(registry, "gleitzeit_call_fallbacks_total", **fallback) == 1
    emulators[1].stop()
    with pytest.raises(AllInstancesFailedError):
        llm.chat(HELLO)
    with pytest.raises(AllInstancesFailedError):
        list(llm.stream_chat(HELLO))
    assert calls(registry, outcome="error", error_type="AllInstancesFailedError") == 2
    errors = {"error_type": "AllInstancesFailedError"}
    assert value(registry, "gen_ai_client_operation_duration_seconds_count", **errors) == 2
    with pytest.raises(TypeError):
        llm.chat(HELLO, not_a_field=1)
    assert calls(registry, outcome="error", error_type="TypeError") == 1


def test_a_stream_left_early_is_counted_as_ended_by_the_caller(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool], registry: CollectorRegistry
) -> None:
    _, instances = pool(1)
    stream = make_llm(instances=instances).stream_chat(HELLO)
    next(stream)
    stream.close()
    assert calls(registry, outcome="error", error_type="GeneratorExit") == 1


def test_embedding_metrics(
    pool: Callable[..., Any], make_embedding: Callable[..., OllamaPoolEmbedding], registry: CollectorRegistry
) -> None:
    _, instances = pool(2)
    embedding = make_embedding(instances=instances)
    embedding.get_text_embedding_batch([f"text {i}" for i in range(6)])
    asyncio.run(embedding.aget_query_embedding("query"))
    labels = {"gen_ai_operation_name": "embeddings", "gen_ai_request_model": "nomic-embed-text:latest"}
    assert calls(registry, outcome="success", **labels) == 3
    assert value(registry, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **labels) == 3


def test_upstream_ollama_is_recorded_once_per_call(
    ollama_emulator: Any, registry: CollectorRegistry, recorder: Any
) -> None:
    llm = Ollama(model="llama3.2", base_url=ollama_emulator.url, context_window=4096)
    try:
        llm.chat(HELLO)
        llm.complete("Hello!")  # Ollama completes through a chat inside: one text_completion, as OllamaPool
    finally:
        llm.client._client.close()
    assert len(recorder.of(LLMCompletionStartEvent)) == 1
    assert calls(registry, gen_ai_operation_name="chat", gleitzeit_instance="", outcome="success") == 1
    assert calls(registry, gen_ai_operation_name="text_completion", outcome="success") == 1


def series(registry: CollectorRegistry, name: str, *drop: str) -> list[dict[str, str]]:
    """The label sets of ``name``'s samples, without the labels in ``drop``."""
    return sorted(
        (
            {k: v for k, v in s.labels.items() if k not in drop}
            for m in registry.collect()
            for s in m.samples
            if s.name == name
        ),
        key=lambda labels: sorted(labels.items()),
    )


# What only the pool knows: Ollama's payload (to_payload) leaves out base_url, by design.
WHERE = ("gleitzeit_instance", "server_address", "server_port", "gen_ai_response_model")


def test_complete_is_labelled_alike_for_ollama_pool_and_ollama(
    ollama_emulator: Any, make_llm: Callable[..., OllamaPool], attach: Any
) -> None:
    # Side by side on one server: every completion form is one text_completion call for both classes.
    recorded = []
    for make in (
        lambda: make_llm(base_url=ollama_emulator.url),
        lambda: Ollama(model="llama3.2", base_url=ollama_emulator.url, context_window=4096),
    ):
        registry = CollectorRegistry()
        handler = attach(PrometheusEventHandler(registry=registry))
        llm = make()
        llm.complete("Hello!")
        list(llm.stream_complete("Hello!"))
        asyncio.run(acomplete_and_close(llm))
        llm.chat(HELLO)
        get_dispatcher().event_handlers.remove(handler)
        recorded.append(series(registry, "gleitzeit_calls_total", *WHERE))
        if isinstance(llm, Ollama):
            llm.client._client.close()
    pool, upstream = recorded
    assert pool == upstream
    by_operation = {labels["gen_ai_operation_name"]: labels for labels in pool}
    assert set(by_operation) == {"chat", "text_completion"}
    assert len(pool) == 2  # one series each, 3 completions in one


async def acomplete_and_close(llm: Any) -> None:
    await llm.acomplete("Hello!")
    if isinstance(llm, Ollama):
        await llm.async_client._client.aclose()  # upstream never closes it


def test_calls_carry_the_answering_model_and_the_servers_address(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool], registry: CollectorRegistry
) -> None:
    emulators, instances = pool(1)
    make_llm(instances=instances).chat(HELLO)
    list(make_llm(instances=instances).stream_chat(HELLO))
    port = str(emulators[0].port)
    where = {"server_address": "127.0.0.1", "server_port": port, "gleitzeit_instance": "e0"}
    answered = {"gen_ai_request_model": "llama3.2:latest", "gen_ai_response_model": "llama3.2:latest"}
    assert calls(registry, **where, **answered) == 2
    gaps = "gen_ai_client_operation_time_per_output_chunk_seconds_count"
    assert value(registry, gaps, **where, **answered) >= 1


def test_upstream_ollama_embedding_calls_are_recorded(
    ollama_emulator: Any, registry: CollectorRegistry
) -> None:
    from llama_index.embeddings.ollama import OllamaEmbedding

    embedding = OllamaEmbedding(
        model_name="nomic-embed-text", base_url=ollama_emulator.url, embed_batch_size=2
    )
    embedding.get_text_embedding_batch([f"text {i}" for i in range(6)])  # 3 batches under one span
    embedding.get_query_embedding("query")

    async def batch() -> None:
        await embedding.aget_text_embedding_batch([f"text {i}" for i in range(4)])  # 2, concurrently
        await embedding._async_client._client.aclose()

    asyncio.run(batch())
    embedding._client._client.close()
    labels = {
        "gen_ai_operation_name": "embeddings",
        "gen_ai_request_model": "nomic-embed-text:latest",
        "gleitzeit_instance": "",
    }
    assert calls(registry, outcome="success", **labels) == 6
    assert value(registry, "gen_ai_client_operation_duration_seconds_count", **labels) == 6
