"""Prometheus metrics of LlamaIndex calls, and the pool's events as instrumentation events.

``PrometheusEventHandler`` on LlamaIndex's root dispatcher records every ``OllamaPool`` call and
every ``OllamaPoolEmbedding`` pool call with the metric names LangChain's handler uses. Routing
decisions, failovers, fallbacks and breaker changes arrive as ``Pool*Event`` instrumentation
events, in the span of the call that caused them. One server is stopped midway.

    .venv/bin/python examples/llama_index/prometheus_metrics.py
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from _common import EMBED_MODEL, MODEL, emulated, servers
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import ChatMessage
from prometheus_client import CollectorRegistry, generate_latest

from gleitzeit_llm import OllamaPoolProvider
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool, PrometheusEventHandler
from llama_index.llms.gleitzeit.events import PoolEvent


def totals(registry: CollectorRegistry, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """A counter's values summed by the given labels."""
    found: Counter[tuple[str, ...]] = Counter()
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                found[tuple(sample.labels[label] for label in labels)] += sample.value
    return dict(sorted(found.items()))


class PoolEventCounter(BaseEventHandler):
    """Counts the pool's instrumentation events by kind (any handler can read them)."""

    seen: Counter[str] = Counter()

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, PoolEvent):
            self.seen[event.kind] += 1


def main() -> None:
    registry = CollectorRegistry()  # or the global one, for prometheus_client.start_http_server(9464)
    counter = PoolEventCounter()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(PrometheusEventHandler(registry=registry))
    dispatcher.add_event_handler(counter)

    lb = {"strategy": "round_robin", "circuit_breaker": {"failure_threshold": 2}}
    with servers(3) as instances, OllamaPoolProvider(instances=instances, load_balancing=lb) as pool:
        llm = OllamaPool(model=MODEL, pool=pool)
        embedding = OllamaPoolEmbedding(model_name=EMBED_MODEL, pool=pool)
        hello = [ChatMessage(role="user", content="Hello!")]
        for n in range(12):
            if n == 4 and emulated():
                instances.emulators["ollama-2"].stop()  # a server dies mid-run
            llm.chat(hello)
            list(llm.stream_complete("Count to three."))
        embedding.get_text_embedding_batch([f"document {i}" for i in range(30)])
        llm.chat(hello, model="llama3.3:70b", fallback_model=MODEL)

    print("gleitzeit_calls_total by operation, instance and outcome:")
    for (operation, instance, outcome), count in totals(
        registry, "gleitzeit_calls_total", "gen_ai_operation_name", "gleitzeit_instance", "outcome"
    ).items():
        print(f"  {operation:<16} {instance:<9} {outcome:<8} {count:g}")
    failovers = totals(registry, "gleitzeit_call_failovers_total", "gen_ai_request_model")
    fallbacks = totals(
        registry, "gleitzeit_call_fallbacks_total", "gen_ai_request_model", "gleitzeit_fallback_model"
    )
    print(f"failovers by model: {failovers}")
    print(f"fallbacks: {fallbacks}")
    exposition = generate_latest(registry).decode()
    print(f"/metrics would expose {exposition.count(chr(10))} lines, e.g.")
    print(
        "  "
        + next(line for line in exposition.splitlines() if line.startswith("gen_ai_client_token_usage_sum"))
    )
    print(f"pool events: {dict(sorted(counter.seen.items()))}")


if __name__ == "__main__":
    main()
