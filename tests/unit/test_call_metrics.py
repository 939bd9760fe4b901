"""The shared per-call metric definitions, read back through Prometheus' own parser."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gleitzeit_llm.observability.metrics import CallMetrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_one_metric_set_per_registry() -> None:
    registry = CollectorRegistry()
    assert CallMetrics.on(registry) is CallMetrics.on(registry)
    assert CallMetrics.on(CollectorRegistry()) is not CallMetrics.on(registry)


def test_a_call_is_recorded_under_the_genai_names() -> None:
    registry = CollectorRegistry()
    metrics = CallMetrics.on(registry)
    metrics.record_call(
        operation="chat",
        model="llama3.2",
        duration=0.3,
        instance="gpu-1",
        input_tokens=26,
        output_tokens=12,
        time_to_first_chunk=0.05,
        attempts=2,
        fallback_model="phi3",
    )
    metrics.record_call(operation="chat", model="llama3.2", duration=1.0, error=TimeoutError("x"))
    got = samples(registry)
    base = (
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "ollama"),
        ("gen_ai_request_model", "llama3.2"),
    )
    ok = tuple(sorted((*base, ("gleitzeit_instance", "gpu-1"))))
    assert (
        got[("gen_ai_client_operation_duration_seconds_count", tuple(sorted((*ok, ("error_type", "")))))] == 1
    )
    assert got[("gen_ai_client_token_usage_sum", tuple(sorted((*ok, ("gen_ai_token_type", "output")))))] == 12
    assert got[("gen_ai_client_operation_time_to_first_chunk_seconds_count", ok)] == 1
    assert got[("gleitzeit_call_failovers_total", ok)] == 1
    assert (
        got[("gleitzeit_call_fallbacks_total", tuple(sorted((*ok, ("gleitzeit_fallback_model", "phi3")))))]
        == 1
    )
    failed = tuple(
        sorted((*base, ("gleitzeit_instance", ""), ("outcome", "error"), ("error_type", "TimeoutError")))
    )
    assert got[("gleitzeit_calls_total", failed)] == 1
