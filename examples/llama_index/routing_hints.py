"""Routing hints: defaults on the LLM, overridden per call on any method.

The fields ``load_balancing_strategy``, ``instance_tags``, ``require_gpu``, ``fallback_model`` and
``max_latency`` (ms) steer every call; the same names as call keywords win for one call, as do
``model=`` and ``thinking=`` (``thinking=False`` turns thinking off even when the field says on).
None of them reaches Ollama. ``response.raw["pool"]`` shows where a call went.

    .venv/bin/python examples/llama_index/routing_hints.py
"""

from __future__ import annotations

from typing import Any

from _common import MODEL, THINKING_MODEL, servers
from llama_index.core.base.llms.types import ThinkingBlock
from llama_index.core.llms import ChatMessage

from llama_index.llms.gleitzeit import OllamaPool

QUESTION = [ChatMessage(role="user", content="Which server should I use?")]


def where(label: str, response: Any) -> None:
    pool = response.raw["pool"]
    thought = any(
        isinstance(b, ThinkingBlock) for b in getattr(getattr(response, "message", None), "blocks", [])
    )
    fallback = f", fallback {pool['requested_model']} -> {pool['model']}" if pool["fallback_used"] else ""
    print(f"{label:<46} -> {pool['instance_id']:<6} model {pool['model']}{fallback}, thinking={thought}")


def main() -> None:
    specs = [
        {"id": "gpu-1", "tags": ["gpu"], "priority": 1},
        {"id": "cpu-1", "tags": ["cpu"], "priority": 2},
        {"id": "cpu-2", "tags": ["cpu"], "priority": 2},
    ]
    with servers(specs) as instances:
        # Defaults for every call: CPU servers, and llama3.2 if the asked-for model is missing.
        llm = OllamaPool(model=MODEL, instances=instances, instance_tags=["cpu"], fallback_model=MODEL)
        try:
            where("chat (defaults: instance_tags=['cpu'])", llm.chat(QUESTION))
            where("chat(instance_tags=['gpu'])", llm.chat(QUESTION, instance_tags=["gpu"]))
            where("complete(require_gpu=True)", llm.complete("Hi", require_gpu=True, instance_tags=None))
            strategy = llm.chat(QUESTION, load_balancing_strategy="priority", instance_tags=None)
            where("chat(load_balancing_strategy='priority')", strategy)
            thinking = llm.chat(QUESTION, model=THINKING_MODEL, thinking=True, instance_tags=["gpu"])
            where(f"chat(model={THINKING_MODEL!r}, thinking=True)", thinking)
            where("  the same with thinking=False", llm.chat(QUESTION, model=THINKING_MODEL, thinking=False))
            where("chat(model='llama3.3:70b') (on no server)", llm.chat(QUESTION, model="llama3.3:70b"))
            streamed = list(llm.stream_chat(QUESTION, instance_tags=["gpu"], max_latency=30_000))
            where("stream_chat(instance_tags=['gpu'], max_latency=30s)", streamed[-1])
        finally:
            llm.close()


if __name__ == "__main__":
    main()
