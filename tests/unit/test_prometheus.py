"""The pool exporter, read back through Prometheus' own parser (no sockets: health checks off)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gleitzeit_llm import InstanceFailedError, ModelNotFoundError
from gleitzeit_llm.manager import OllamaPoolManager
from gleitzeit_llm.observability.events import FailoverEvent, FallbackEvent, RequestFinished
from gleitzeit_llm.observability.metrics import CallMetrics
from gleitzeit_llm.observability.prometheus import OTHER_MODEL, PoolMetrics, instrument
from gleitzeit_llm.provider import OllamaPoolProvider

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, sorted labels), and the type of every family."""
    text = generate_latest(registry).decode()
    families = list(text_string_to_metric_families(text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return samples, {f.name: f.type for f in families}


# Short names in the tests for the exported label names (the vocabulary the per-call metrics share).
LABELS = {
    "instance": "gleitzeit_instance",
    "model": "gen_ai_request_model",
    "type": "gen_ai_token_type",
    "fallback_model": "gleitzeit_fallback_model",
}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted((LABELS.get(k, k), v) for k, v in labels.items()))))


def manager(**lb: object) -> OllamaPoolManager:
    return OllamaPoolManager(
        instances=[
            {"id": "gpu", "url": "http://user:secret@127.0.0.1:20001", "max_concurrent": 3},
            {"id": "cpu", "url": "http://127.0.0.1:20002", "max_concurrent": 2},
        ],
        load_balancing=lb or None,
        health_checks=False,
    )


def lease_on(pool: OllamaPoolManager, instance: str, model: str = "llama3.2") -> object:
    other = [i.id for i in pool.instances if i.id != instance]
    lease = pool.try_acquire(pool.route_request(model, exclude=other))
    assert getattr(lease, "instance_id", None) == instance
    return lease


def test_live_state_is_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    pool = manager()
    instrument(pool, registry)
    lease = lease_on(pool, "gpu")
    samples, types = scrape(registry)
    assert value(samples, "gleitzeit_instance_in_flight", instance="gpu") == 1
    assert value(samples, "gleitzeit_instance_model_in_flight", instance="gpu", model="llama3.2:latest") == 1
    assert value(samples, "gleitzeit_instance_max_concurrent", instance="gpu") == 3
    assert value(samples, "gleitzeit_instance_state", instance="gpu", state="unknown") == 1
    assert value(samples, "gleitzeit_instance_state", instance="gpu", state="healthy") == 0
    assert value(samples, "gleitzeit_instance_circuit_state", instance="cpu", state="closed") == 1
    assert types["gleitzeit_instance_state"] == "gauge"
    assert types["gleitzeit_instance_health_checks"] == "counter"

    pool.finish(lease, None)  # type: ignore[arg-type]
    samples, _ = scrape(registry)
    assert value(samples, "gleitzeit_instance_in_flight", instance="gpu") == 0
    assert (
        value(samples, "gleitzeit_instance_model_in_flight", instance="gpu", model="llama3.2:latest") is None
    )
    assert value(samples, "gleitzeit_instance_state", instance="gpu", state="healthy") == 1  # served: healthy
    assert value(samples, "gleitzeit_instance_models_loaded", instance="gpu") == 1
    assert value(samples, "gleitzeit_instance_model_loaded", instance="gpu", model="llama3.2:latest") == 1
    assert value(samples, "gleitzeit_instance_models_installed", instance="gpu") is None  # never probed


def test_counters_count_each_event_once_however_often_scraped() -> None:
    registry = CollectorRegistry()
    pool = manager()
    instrument(pool, registry)
    for _ in range(3):
        pool.finish(lease_on(pool, "gpu"), None, output_tokens=12, prompt_tokens=5)  # type: ignore[arg-type]
    for _ in range(5):  # the guide's snippet would have added its running total on each of these
        samples, types = scrape(registry)
    requests = "gleitzeit_pool_requests_total"
    assert value(samples, requests, instance="gpu", model="llama3.2:latest", outcome="success") == 3
    assert types["gleitzeit_pool_requests"] == "counter"
    assert (
        value(samples, "gleitzeit_pool_tokens_total", instance="gpu", model="llama3.2:latest", type="output")
        == 36
    )
    # The per-call metrics' token types (input, output), not "prompt" (#14: one vocabulary).
    tokens = {"instance": "gpu", "model": "llama3.2:latest"}
    assert value(samples, "gleitzeit_pool_tokens_total", **tokens, type="input") == 15
    assert (
        value(samples, "gleitzeit_pool_attempt_duration_seconds_count", instance="gpu", outcome="success")
        == 3
    )
    assert types["gleitzeit_pool_attempt_duration_seconds"] == "histogram"


def test_outcomes_failovers_fallbacks_cold_loads_and_breaker_trips_are_counted() -> None:
    registry = CollectorRegistry()
    pool = manager(circuit_breaker={"failure_threshold": 1, "recovery_timeout": 60})
    instrument(pool, registry)
    pool.finish(lease_on(pool, "cpu"), InstanceFailedError("reset", instance="cpu"))  # type: ignore[arg-type]
    pool.finish(lease_on(pool, "gpu", "qwen3"), ModelNotFoundError("no", model="qwen3"))  # type: ignore[arg-type]
    pool.finish(lease_on(pool, "gpu"), None, cold_load=True)  # type: ignore[arg-type]
    pool.events.emit(FailoverEvent("cpu", "llama3.2", "InstanceFailedError: reset", 1))
    pool.events.emit(FallbackEvent("qwen3", "llama3.2", "missing"))
    samples, _ = scrape(registry)
    requests = "gleitzeit_pool_requests_total"
    assert value(samples, requests, instance="cpu", model="llama3.2:latest", outcome="failure") == 1
    assert value(samples, requests, instance="gpu", model="qwen3:latest", outcome="model_missing") == 1
    assert value(samples, "gleitzeit_pool_cold_loads_total", instance="gpu", model="llama3.2:latest") == 1
    assert value(samples, "gleitzeit_pool_failovers_total", instance="cpu") == 1
    assert value(samples, "gleitzeit_pool_fallbacks_total", model="qwen3", fallback_model="llama3.2") == 1
    assert value(samples, "gleitzeit_pool_breaker_transitions_total", instance="cpu", state="open") == 1
    assert value(samples, "gleitzeit_pool_health_transitions_total", instance="cpu", state="unhealthy") == 1
    assert value(samples, "gleitzeit_instance_circuit_state", instance="cpu", state="open") == 1
    assert value(samples, "gleitzeit_instance_consecutive_failures", instance="cpu") == 1
    assert value(samples, "gleitzeit_instance_recent_error_ratio", instance="cpu") == 1.0


def test_labels_never_carry_urls_and_model_names_are_capped() -> None:
    registry = CollectorRegistry()
    pool = manager()
    metrics = PoolMetrics(pool, registry, max_models=2)
    for model in ("a", "b", "c", "d"):
        pool.events.emit(RequestFinished("gpu", model, "success", 0.1))
    text = generate_latest(registry).decode()
    # Host and port are labels (server_address, server_port on gleitzeit_instance_info, #14); the
    # URL and its credentials never are.
    assert "secret" not in text and "user" not in text and "http://" not in text and "127.0.0.1:" not in text
    samples, _ = scrape(registry)
    info = {"instance": "gpu", "version": "", "server_address": "127.0.0.1", "server_port": "20001"}
    assert value(samples, "gleitzeit_instance_info", **info) == 1
    samples, _ = scrape(registry)
    requests = "gleitzeit_pool_requests_total"
    assert value(samples, requests, instance="gpu", model="a", outcome="success") == 1
    assert value(samples, requests, instance="gpu", model=OTHER_MODEL, outcome="success") == 2
    metrics.close()


def test_removed_instances_leave_the_gauges() -> None:
    registry = CollectorRegistry()
    pool = manager()
    instrument(pool, registry)
    pool.remove_instance("cpu")
    samples, _ = scrape(registry)
    assert value(samples, "gleitzeit_instance_in_flight", instance="gpu") == 0
    assert value(samples, "gleitzeit_instance_in_flight", instance="cpu") is None


def test_instrument_is_idempotent_and_close_unregisters() -> None:
    registry = CollectorRegistry()
    pool = manager()
    provider = OllamaPoolProvider(manager=pool)
    metrics = instrument(provider, registry)
    assert instrument(pool, registry) is metrics  # the same manager behind a provider
    with pytest.raises(ValueError, match="one pool per registry"):
        instrument(manager(), registry)
    metrics.close()
    pool.events.emit(RequestFinished("gpu", "x", "success", 0.1))
    assert generate_latest(registry) == b""
    assert len(pool.events) == 0
    assert instrument(manager(), registry) is not metrics  # the registry is free again


def test_pool_and_per_call_metrics_share_a_registry() -> None:
    registry = CollectorRegistry()
    CallMetrics.on(registry)
    instrument(manager(), registry)  # no name collides with gen_ai_* or gleitzeit_call*
    _, types = scrape(registry)
    assert "gen_ai_client_operation_duration_seconds" in types
    assert "gleitzeit_pool_requests" in types


def test_anything_but_a_pool_is_refused() -> None:
    with pytest.raises(TypeError, match="OllamaPoolManager"):
        instrument(object(), CollectorRegistry())
