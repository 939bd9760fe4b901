"""PrometheusCallbackHandler: the metrics a run leaves, read back through Prometheus' own parser."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_ollama import ChatOllama
from lc_support import LOOPBACK
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gleitzeit_llm import AllInstancesFailedError
from langchain_gleitzeit import ChatOllamaPool, PrometheusCallbackHandler

pytestmark = LOOPBACK

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(got: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in got.items() if n == name and wanted <= set(ls))


def labels_of(got: Samples) -> set[str]:
    return {f"{k}={v}" for (_, ls) in got for k, v in ls if k not in ("le", "quantile")}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_an_invoke_records_duration_tokens_instance_and_outcome(emulated_pool: Any, registry: Any) -> None:
    provider, _ = emulated_pool(3, health_checks=False)
    handler = PrometheusCallbackHandler(registry=registry)
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    message = llm.invoke("a secret prompt", config={"callbacks": [handler]})
    instance = message.response_metadata["pool"]["instance_id"]
    usage = message.usage_metadata
    assert usage is not None

    got = samples(registry)
    call = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "ollama",
        "gen_ai_request_model": "llama3.2:latest",
        "gleitzeit_instance": instance,
    }
    assert value(got, "gen_ai_client_operation_duration_seconds_count", **call, error_type="") == 1
    assert value(got, "gen_ai_client_operation_duration_seconds_sum", **call) > 0
    assert (
        value(got, "gen_ai_client_token_usage_sum", **call, gen_ai_token_type="input")
        == usage["input_tokens"]
    )
    assert (
        value(got, "gen_ai_client_token_usage_sum", **call, gen_ai_token_type="output")
        == usage["output_tokens"]
    )
    assert value(got, "gleitzeit_calls_total", **call, outcome="success", error_type="") == 1
    assert value(got, "gleitzeit_call_attempts_sum", **call) == 1
    assert value(got, "gleitzeit_call_failovers_total") == 0
    # Not streamed: no time to first chunk.
    assert value(got, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == 0
    # Bounded labels: never the prompt, a run id or a URL.
    assert not any("secret" in label or "http" in label for label in labels_of(got))


def test_streams_record_time_to_first_chunk_and_chunk_gaps(emulated_pool: Any, registry: Any) -> None:
    provider, _ = emulated_pool(2, health_checks=False)
    handler = PrometheusCallbackHandler(registry=registry)
    llm = ChatOllamaPool(model="llama3.2", pool=provider, callbacks=[handler])
    chunks = list(llm.stream("hi"))
    got = samples(registry)
    assert value(got, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == 1
    assert value(got, "gen_ai_client_operation_time_per_output_chunk_seconds_count") == len(chunks) - 1
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.usage_metadata is not None
    output = full.usage_metadata["output_tokens"]
    assert value(got, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == output
    instance = full.response_metadata["pool"]["instance_id"]
    assert value(got, "gleitzeit_calls_total", gleitzeit_instance=instance, outcome="success") == 1


async def test_async_runs_are_recorded_too(emulated_pool: Any, registry: Any) -> None:
    provider, _ = emulated_pool(2, health_checks=False)
    handler = PrometheusCallbackHandler(registry=registry, chunk_gaps=False)
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    await llm.ainvoke("hi", config={"callbacks": [handler]})
    [c async for c in llm.astream("hi", config={"callbacks": [handler]})]
    await llm.abatch(["a", "b", "c"], config={"callbacks": [handler]})
    got = samples(registry)
    assert value(got, "gleitzeit_calls_total", outcome="success") == 5
    assert value(got, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == 1
    assert value(got, "gen_ai_client_operation_time_per_output_chunk_seconds_count") == 0


def test_failovers_and_fallbacks(emulated_pool: Any, registry: Any) -> None:
    provider, emulators = emulated_pool(2, health_checks=False, load_balancing={"retry_backoff_base": 0})
    emulators[0].stop()
    handler = PrometheusCallbackHandler(registry=registry)
    llm = ChatOllamaPool(model="llama3.2", pool=provider, load_balancing_strategy="round_robin")
    infos = [llm.invoke(f"q{i}", config={"callbacks": [handler]}).response_metadata["pool"] for i in range(3)]
    failovers = sum(info["attempts"] - 1 for info in infos)
    assert failovers >= 1

    ChatOllamaPool(model="llama3.3:70b", pool=provider, fallback_model="llama3.2").invoke(
        "big question", config={"callbacks": [handler]}
    )
    got = samples(registry)
    assert value(got, "gleitzeit_call_failovers_total", gen_ai_request_model="llama3.2:latest") == failovers
    assert value(got, "gleitzeit_call_attempts_count", gen_ai_request_model="llama3.2:latest") == 3
    assert (
        value(
            got,
            "gleitzeit_call_fallbacks_total",
            gen_ai_request_model="llama3.3:70b",
            gleitzeit_fallback_model="llama3.2:latest",
            gleitzeit_instance="ollama-2",
        )
        == 1
    )


def test_errors_are_counted_by_type(emulated_pool: Any, registry: Any) -> None:
    provider, emulators = emulated_pool(2, health_checks=False, load_balancing={"retry_backoff_base": 0})
    for emulator in emulators:
        emulator.stop()
    handler = PrometheusCallbackHandler(registry=registry)
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    with pytest.raises(AllInstancesFailedError):
        llm.invoke("hi", config={"callbacks": [handler]})
    with pytest.raises(ValueError):
        llm.invoke("hi", temprature=1, config={"callbacks": [handler]})
    got = samples(registry)
    failed = value(got, "gleitzeit_calls_total", outcome="error", error_type="AllInstancesFailedError")
    assert failed == 1
    assert value(got, "gleitzeit_calls_total", outcome="error", error_type="RequestError") == 1
    assert (
        value(got, "gen_ai_client_operation_duration_seconds_count", error_type="AllInstancesFailedError")
        == 1
    )
    assert value(got, "gleitzeit_call_failovers_total") >= 1  # the failed call's attempts beyond the first


def test_runs_of_other_providers_are_ignored(registry: Any) -> None:
    handler = PrometheusCallbackHandler(registry=registry)
    GenericFakeChatModel(messages=iter(["hello"])).invoke("hi", config={"callbacks": [handler]})
    assert value(samples(registry), "gleitzeit_calls_total") == 0


def test_one_metric_set_per_registry_shared_by_handlers(registry: Any) -> None:
    assert (
        PrometheusCallbackHandler(registry=registry).metrics
        is PrometheusCallbackHandler(registry=registry).metrics
    )


def test_plain_chatollama_runs_are_recorded_without_an_instance(ollama_emulator: Any, registry: Any) -> None:
    handler = PrometheusCallbackHandler(registry=registry)
    llm = ChatOllama(model="llama3.2", base_url=ollama_emulator.url)
    try:
        llm.invoke("hi", config={"callbacks": [handler]})
    finally:
        llm._client._client.close()
    got = samples(registry)
    assert (
        value(got, "gleitzeit_calls_total", gleitzeit_instance="", gen_ai_request_model="llama3.2:latest")
        == 1
    )
    assert value(got, "gen_ai_client_token_usage_count", gen_ai_token_type="output") == 1


def test_chunk_gaps_carry_the_serving_instance_and_server(emulated_pool: Any, registry: Any) -> None:
    # As the LlamaIndex handler's: the gaps of a stream are labelled like its duration.
    provider, _ = emulated_pool(2, health_checks=False)
    handler = PrometheusCallbackHandler(registry=registry)
    llm = ChatOllamaPool(model="llama3.2", pool=provider, callbacks=[handler])
    chunks = list(llm.stream("hi"))
    pool = chunks[-1].response_metadata["pool"]
    port = pool["instance_url"].rsplit(":", 1)[1].rstrip("/")
    where = {
        "gleitzeit_instance": pool["instance_id"],
        "server_address": "127.0.0.1",
        "server_port": port,
        "gen_ai_request_model": "llama3.2:latest",
        "gen_ai_response_model": "llama3.2:latest",
    }
    got = samples(registry)
    gaps = "gen_ai_client_operation_time_per_output_chunk_seconds_count"
    assert value(got, gaps, **where) == len(chunks) - 1 > 0
    assert value(got, "gen_ai_client_operation_duration_seconds_count", **where) == 1
