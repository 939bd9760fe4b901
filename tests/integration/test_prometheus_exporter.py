"""The pool exporter over HTTP: a pool against emulators, scraped and parsed like Prometheus does."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gleitzeit_llm.observability.prometheus import instrument, start_metrics_server
from gleitzeit_llm.provider import OllamaPoolProvider

# Short names in the tests for the exported label names.
LABELS = {"instance": "gleitzeit_instance", "model": "gen_ai_request_model"}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


async def test_a_failover_shows_in_the_scraped_metrics(ollama_emulators: Any) -> None:
    good, broken = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    broken.set_faults(error_rate=1.0)
    config = {
        "instances": [
            {"id": "broken", "url": broken.url, "priority": 0},
            {"id": "good", "url": good.url, "priority": 1},
        ],
        "load_balancing": {"strategy": "priority", "retry_backoff_base": 0},
    }
    registry = CollectorRegistry()
    async with OllamaPoolProvider(config=config) as pool:
        metrics = instrument(pool, registry)
        with start_metrics_server(0, registry=registry) as server:
            reply = await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
            assert reply.pool is not None and reply.pool.instance_id == "good"
            first = scrape(server.url)
            second = scrape(server.url)
        metrics.close()

    def at(samples: dict[Any, float], name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted((LABELS.get(k, k), v) for k, v in labels.items()))))

    def counted(samples: dict[Any, float]) -> dict[Any, float]:
        return {k: v for k, v in samples.items() if k[0].startswith("gleitzeit_pool_")}

    assert counted(first) == counted(second)  # a scrape counts nothing (the guide's snippet did)
    requests = "gleitzeit_pool_requests_total"
    assert at(first, requests, instance="broken", model="llama3.2:latest", outcome="failure") == 1
    assert at(first, requests, instance="good", model="llama3.2:latest", outcome="success") == 1
    assert at(first, "gleitzeit_pool_failovers_total", instance="broken") == 1
    assert (
        at(
            first,
            "gleitzeit_pool_time_to_first_chunk_seconds_count",
            instance="good",
            model="llama3.2:latest",
        )
        == 1
    )
    assert at(first, "gleitzeit_instance_state", instance="good", state="healthy") == 1
    assert at(first, "gleitzeit_instance_models_installed", instance="good") == 1
    assert at(first, "gleitzeit_instance_model_loaded", instance="good", model="llama3.2:latest") == 1
    info = {"instance": "good", "version": "0.12.6", "server_address": "127.0.0.1"}
    assert at(first, "gleitzeit_instance_info", **info, server_port=str(good.port)) == 1
    assert at(first, "gleitzeit_instance_health_checks_total", instance="good", outcome="ok") >= 1  # type: ignore[operator]
    assert at(first, "gleitzeit_pool_waiting_requests") == 0


def test_the_server_listens_on_loopback_and_closes(ollama_emulators: Any) -> None:
    registry = CollectorRegistry()
    server = start_metrics_server(0, registry=registry)
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    assert httpx.get(server.url, timeout=5).status_code == 200
    server.close()
    server.close()  # idempotent
