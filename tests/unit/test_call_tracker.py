"""CallTracker: the per-call bookkeeping both framework handlers drive, without a framework."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from gleitzeit_llm.errors import AllInstancesFailedError, InstanceFailedError
from gleitzeit_llm.observability.framework import MAX_HELD_GAPS, CallTracker, pool_of, server_of


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_a_streamed_call_records_its_first_chunk_gaps_and_pool_facts() -> None:
    registry = CollectorRegistry()
    tracker = CallTracker(registry)
    tracker.start("run-1", "chat", "llama3.2")
    for _ in range(3):
        tracker.chunk("run-1", {"pool": {"instance_id": "gpu-1"}})
    call = tracker.pop("run-1")
    assert call is not None and tracker.pop("run-1") is None
    tracker.record_success(
        call, {"attempts": 2, "fallback_used": True, "model": "phi3"}, input_tokens=5, output_tokens=3
    )
    labels = {"gen_ai_request_model": "llama3.2:latest", "gleitzeit_instance": "gpu-1"}  # named by a chunk
    assert value(registry, "gen_ai_client_operation_time_to_first_chunk_seconds_count", **labels) == 1
    assert value(registry, "gen_ai_client_operation_time_per_output_chunk_seconds_count", **labels) == 2
    assert value(registry, "gleitzeit_call_failovers_total", **labels) == 1
    assert value(registry, "gleitzeit_call_fallbacks_total", gleitzeit_fallback_model="phi3:latest") == 1
    assert value(registry, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 3


def test_a_failed_call_counts_its_attempts_and_unknown_keys_are_ignored() -> None:
    registry = CollectorRegistry()
    tracker = CallTracker(registry)
    tracker.start("run-1", "text_completion", "llama3.2")
    errors = [InstanceFailedError("down", instance="a"), InstanceFailedError("down", instance="b")]
    tracker.fail("run-1", AllInstancesFailedError("all failed", errors=errors))
    tracker.fail("never-started", ValueError("x"))
    tracker.chunk("never-started")
    error = {"error_type": "AllInstancesFailedError"}
    assert value(registry, "gleitzeit_calls_total", outcome="error", **error) == 1
    assert value(registry, "gleitzeit_call_attempts_sum", gen_ai_operation_name="text_completion") == 2
    assert value(registry, "gleitzeit_calls_total") == 1


def test_beyond_keep_at_most_the_oldest_open_calls_are_forgotten() -> None:
    tracker = CallTracker(CollectorRegistry())
    for key in ("a", "b", "c"):
        tracker.start(key, "chat", "llama3.2", keep_at_most=2)
    assert tracker.pop("a") is None
    assert tracker.pop("b") is not None and tracker.pop("c") is not None


def test_pool_facts_come_from_a_mapping_or_an_attribute() -> None:
    assert pool_of({"pool": {"attempts": 1}}) == {"attempts": 1}
    assert pool_of(SimpleNamespace(pool={"attempts": 2})) == {"attempts": 2}
    assert pool_of({"pool": "not a mapping"}) == {} and pool_of(None) == {}


GAPS = "gen_ai_client_operation_time_per_output_chunk_seconds_count"


def streamed(chunks: int, key: str = "run-1") -> tuple[CollectorRegistry, CallTracker]:
    """A tracker with one open call of ``chunks`` chunks whose instance no chunk named."""
    registry = CollectorRegistry()
    tracker = CallTracker(registry)
    tracker.start(key, "chat", "llama3.2")
    for _ in range(chunks):
        tracker.chunk(key)
    return registry, tracker


def test_chunk_gaps_wait_for_the_serving_instance_named_at_the_end() -> None:
    # LangChain's chunks do not name the instance; the gaps must still carry it, as the duration does.
    registry, tracker = streamed(4)
    assert value(registry, GAPS) == 0
    call = tracker.pop("run-1")
    assert call is not None
    pool = {"instance_id": "gpu-1", "instance_url": "http://gpu1.lan:11434", "model": "llama3.2"}
    tracker.record_success(call, pool)
    where = {
        "gleitzeit_instance": "gpu-1",
        "server_address": "gpu1.lan",
        "server_port": "11434",
        "gen_ai_response_model": "llama3.2:latest",
    }
    assert value(registry, GAPS, **where) == 3
    assert value(registry, "gen_ai_client_operation_duration_seconds_count", **where) == 1


def test_a_failed_stream_records_its_held_gaps_and_gaps_beyond_the_bound_go_out_at_once() -> None:
    registry, tracker = streamed(3)
    tracker.fail("run-1", InstanceFailedError("reset", instance="gpu-2"))
    assert value(registry, GAPS, gleitzeit_instance="gpu-2") == 2
    tracker.start("run-2", "chat", "llama3.2")
    for _ in range(MAX_HELD_GAPS + 3):
        tracker.chunk("run-2")
    assert value(registry, GAPS, gleitzeit_instance="") == 2  # the held ones wait, the rest went out


def test_the_configured_server_is_the_address_until_the_pool_names_one() -> None:
    registry = CollectorRegistry()
    tracker = CallTracker(registry)
    tracker.start("run-1", "chat", "llama3.2", server_url="https://user:secret@ollama.example:8443/x?y=1")
    call = tracker.pop("run-1")
    assert call is not None
    tracker.record_success(call, {}, response_model="llama3.2")
    got = {
        "server_address": "ollama.example",
        "server_port": "8443",
        "gleitzeit_instance": "",
        "gen_ai_response_model": "llama3.2:latest",
    }
    assert value(registry, "gleitzeit_calls_total", **got) == 1


def test_server_of_reads_host_and_port_only() -> None:
    assert server_of("http://10.0.0.5:11434") == ("10.0.0.5", 11434)
    assert server_of("https://ollama.example") == ("ollama.example", 443)
    assert server_of("http://[::1]:8080/") == ("::1", 8080)
    assert server_of(None) == ("", None) and server_of("http://h:notaport") == ("", None)
