"""``gleitzeit-llm status --metrics-url``: the status table rebuilt from the exporter's text."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gleitzeit_llm.cli import UsageError, render_status, status_from_metrics
from gleitzeit_llm.manager import OllamaPoolManager
from gleitzeit_llm.observability.events import RequestFinished
from gleitzeit_llm.observability.prometheus import instrument


def test_requests_error_rate_and_p50_come_from_the_counters_and_buckets() -> None:
    registry = CollectorRegistry()
    pool = OllamaPoolManager(
        instances=[{"id": "gpu", "url": "http://127.0.0.1:20001", "max_concurrent": 3}], health_checks=False
    )
    instrument(pool, registry)
    for duration in (0.05, 0.05, 0.06, 0.3):
        pool.events.emit(RequestFinished("gpu", "llama3.2:latest", "success", duration))
    pool.events.emit(RequestFinished("gpu", "llama3.2:latest", "failure", 2.0))
    pool.events.emit(RequestFinished("gpu", "llama3.2:latest", "busy", 0.01))  # not a request served

    status = status_from_metrics(generate_latest(registry).decode(), source="http://app/metrics")
    row = status["instances"]["gpu"]
    assert row["state"] == "unknown" and row["circuit_state"] == "closed"
    assert (row["active_requests"], row["max_concurrent"]) == (0, 3)
    assert row["total_requests"] == 5
    assert row["error_rate"] == 20.0
    assert 0.04 < row["p50_response_time"] <= 0.08  # inside the bucket holding the median
    table = render_status(status)
    assert table.splitlines()[1].split()[:7] == ["gpu", "unknown", "closed", "0/3", "5", "67", "ms"]
    assert "20.0%" in table
    assert table.splitlines()[-1] == "0/1 healthy  waiting 0  source http://app/metrics"


def test_text_without_gleitzeit_metrics_is_refused() -> None:
    with pytest.raises(UsageError, match="no gleitzeit_instance_"):
        status_from_metrics("# HELP up x\n# TYPE up gauge\nup 1\n", source="http://x/metrics")
