"""PrometheusCallbackHandler and the pool's own metrics behind one /metrics endpoint.

The handler records each chat call of a LangChain run: duration, time to first chunk (streams),
input and output tokens, outcome and error type, the instance that served it, failovers and
fallbacks, under the OpenTelemetry GenAI names (``gen_ai_client_*``) plus ``gleitzeit_call*``.
``gleitzeit_llm.observability.prometheus.instrument(pool)`` adds the pool's view
(``gleitzeit_instance_*``, ``gleitzeit_pool_*``: state, in-flight, every attempt). This script
serves both from one registry, scrapes its own endpoint once and prints a few lines.

    .venv/bin/python examples/langchain/prometheus_metrics.py
"""

from __future__ import annotations

import urllib.request

from _common import MODEL, servers
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from prometheus_client import CollectorRegistry

from gleitzeit_llm.observability.prometheus import instrument, start_metrics_server
from langchain_gleitzeit import ChatOllamaPool, PrometheusCallbackHandler

SHOWN = (
    "gen_ai_client_operation_duration_seconds_count",
    "gen_ai_client_operation_time_to_first_chunk_seconds_count",
    "gleitzeit_calls_total",
    "gleitzeit_call_failovers_total",
    "gleitzeit_call_fallbacks_total",
    "gleitzeit_pool_failovers_total",
)


def main() -> None:
    registry = CollectorRegistry()  # or leave it out for prometheus_client's global registry
    handler = PrometheusCallbackHandler(registry=registry)

    with servers(3) as instances, start_metrics_server(0, registry=registry) as server:
        llm = ChatOllamaPool(model=MODEL, instances=instances, num_predict=48)
        pool_metrics = instrument(llm.provider, registry=registry)  # the pool's own series
        chain = ChatPromptTemplate.from_template("Explain {topic} in one sentence.") | llm | StrOutputParser()
        config = {"callbacks": [handler]}  # or ChatOllamaPool(..., callbacks=[handler])

        chain.batch([{"topic": t} for t in ("tides", "rainbows", "volcanoes", "magnets")], config=config)
        "".join(chain.stream({"topic": "auroras"}, config=config))
        llm.invoke("Hi", model="llama3.3:70b", fallback_model=MODEL, config=config)  # a fallback
        if instances.emulated:
            instances.emulators["ollama-1"].stop()  # the next calls fail over from it
        for n in range(3):
            chain.invoke({"topic": f"gravity, part {n}"}, config=config)

        text = urllib.request.urlopen(server.url, timeout=5).read().decode()
        pool_metrics.close()
        llm.close()

    print(f"scraped {server.url}:")
    for line in text.splitlines():
        if line.startswith(SHOWN):
            print(" ", line)


if __name__ == "__main__":
    main()
