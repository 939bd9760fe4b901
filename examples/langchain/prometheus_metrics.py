"""PrometheusCallbackHandler behind a /metrics endpoint.

The handler records each chat call of a run: duration, time to first chunk (streams), input
and output tokens, outcome and error type, the instance that served it, failovers and
fallbacks, under the OpenTelemetry GenAI names (``gen_ai_client_*``) plus ``gleitzeit_call*``.
Pass it in ``config={"callbacks": [handler]}`` (or to the model's ``callbacks``) and serve its
registry with prometheus_client. This script scrapes its own endpoint once and prints a few lines.

    .venv/bin/python examples/langchain/prometheus_metrics.py
"""

from __future__ import annotations

import urllib.request

from _common import MODEL, servers
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from prometheus_client import CollectorRegistry, start_http_server

from langchain_gleitzeit import ChatOllamaPool, PrometheusCallbackHandler

SHOWN = (
    "gen_ai_client_operation_duration_seconds_count",
    "gen_ai_client_token_usage_sum",
    "gen_ai_client_operation_time_to_first_chunk_seconds_count",
    "gleitzeit_calls_total",
    "gleitzeit_call_failovers_total",
    "gleitzeit_call_fallbacks_total",
)


def main() -> None:
    registry = CollectorRegistry()  # or leave it out for prometheus_client's global registry
    handler = PrometheusCallbackHandler(registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    with servers(3) as instances:
        llm = ChatOllamaPool(model=MODEL, instances=instances, num_predict=48)
        chain = ChatPromptTemplate.from_template("Explain {topic} in one sentence.") | llm | StrOutputParser()
        config = {"callbacks": [handler]}

        chain.batch([{"topic": t} for t in ("tides", "rainbows", "volcanoes", "magnets")], config=config)
        "".join(chain.stream({"topic": "auroras"}, config=config))
        llm.invoke("Hi", model="llama3.3:70b", fallback_model=MODEL, config=config)  # a fallback
        if instances.emulated:
            instances.emulators["ollama-1"].stop()  # a failover or two
        for n in range(3):
            chain.invoke({"topic": f"gravity, part {n}"}, config=config)
        llm.close()

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    server.shutdown()
    thread.join(timeout=5)
    print(f"scraped {url}:")
    for line in text.splitlines():
        if line.startswith(SHOWN):
            print(" ", line)


if __name__ == "__main__":
    main()
