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
        ("gen_ai_request_model", "llama3.2:latest"),
        ("gen_ai_response_model", ""),
        ("server_address", ""),
        ("server_port", ""),
    )
    ok = tuple(sorted((*base, ("gleitzeit_instance", "gpu-1"))))
    assert (
        got[("gen_ai_client_operation_duration_seconds_count", tuple(sorted((*ok, ("error_type", "")))))] == 1
    )
    assert got[("gen_ai_client_token_usage_sum", tuple(sorted((*ok, ("gen_ai_token_type", "output")))))] == 12
    assert got[("gen_ai_client_operation_time_to_first_chunk_seconds_count", ok)] == 1
    assert got[("gleitzeit_call_failovers_total", ok)] == 1
    assert (
        got[
            (
                "gleitzeit_call_fallbacks_total",
                tuple(sorted((*ok, ("gleitzeit_fallback_model", "phi3:latest")))),
            )
        ]
        == 1
    )
    failed = tuple(
        sorted((*base, ("gleitzeit_instance", ""), ("outcome", "error"), ("error_type", "TimeoutError")))
    )
    assert got[("gleitzeit_calls_total", failed)] == 1


def test_client_histograms_use_the_genai_client_buckets() -> None:
    # OpenTelemetry GenAI client metrics: gen_ai.client.operation.duration's boundaries for every
    # client duration (the chunk gaps used gen_ai.server.time_per_output_token's before).
    client_durations = [
        0.01,
        0.02,
        0.04,
        0.08,
        0.16,
        0.32,
        0.64,
        1.28,
        2.56,
        5.12,
        10.24,
        20.48,
        40.96,
        81.92,
    ]
    tokens = [4.0**i for i in range(14)]
    metrics = CallMetrics.on(CollectorRegistry())
    labels = metrics.labels("chat", "llama3.2")
    metrics.record_chunk_gaps(labels, [0.5])
    metrics.record_call(
        operation="chat", model="llama3.2", duration=0.5, input_tokens=3, time_to_first_chunk=0.1
    )

    def bounds(name: str) -> list[float]:
        family = next(f for f in metrics.registry.collect() if f.name == name)
        return [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")][:-1]

    for name in (
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "gen_ai_client_operation_time_per_output_chunk_seconds",
    ):
        assert bounds(name) == client_durations, name
    assert bounds("gen_ai_client_token_usage") == tokens


def test_model_labels_are_the_pools_normal_form() -> None:
    metrics = CallMetrics.on(CollectorRegistry())
    assert metrics.labels("chat", "Llama3.2", "gpu-1", "llama3.2:latest", "gpu1", 11434) == (
        "chat",
        "ollama",
        "llama3.2:latest",
        "llama3.2:latest",
        "gpu1",
        "11434",
        "gpu-1",
    )
