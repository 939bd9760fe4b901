"""Routing hints per call, through with_routing() and as constructor defaults.

Hints steer the pool and are never sent to Ollama: ``instance_tags``, ``require_gpu``,
``load_balancing_strategy``, ``fallback_model`` and ``max_latency`` (ms). Per-call values win
over the model's own. ``llm.with_routing(...)`` is a copy of the model with other hints on the same
pool; unlike ``bind(...)``, its hints survive ``bind_tools``, ``with_structured_output`` and agents.

    .venv/bin/python examples/langchain/routing_hints.py

Emulated pool: ``gpu-1`` (tags gpu), ``cpu-1`` and ``cpu-2`` (tags cpu).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from _common import MODEL, servers
from langchain_core.language_models import LanguageModelInput
from langchain_core.runnables import Runnable

from gleitzeit_llm import GleitzeitError
from langchain_gleitzeit import ChatOllamaPool


def where(label: str, runnable: Runnable[LanguageModelInput, Any], calls: int = 4, **hints: Any) -> None:
    """Invoke ``calls`` times with these per-call hints; print which instances answered."""
    try:
        served = Counter(
            runnable.invoke(f"{label} #{n}", **hints).response_metadata["pool"]["instance_id"]
            for n in range(calls)
        )
    except GleitzeitError as exc:  # e.g. real servers without these tags
        print(f"{label:<44} failed: {exc}")
        return
    print(f"{label:<44} " + ", ".join(f"{i}={n}" for i, n in sorted(served.items())))


def main() -> None:
    with servers(
        [{"id": "gpu-1", "tags": ["gpu"]}, {"id": "cpu-1", "tags": ["cpu"]}, {"id": "cpu-2", "tags": ["cpu"]}]
    ) as instances:
        llm = ChatOllamaPool(model=MODEL, instances=instances, num_predict=32)

        where("no hints", llm, calls=6)
        where("per call: instance_tags=['gpu']", llm, instance_tags=["gpu"])
        where("per call: require_gpu=True", llm, require_gpu=True)
        cpu_default = llm.with_routing(instance_tags=["cpu"])
        where("with_routing(instance_tags=['cpu'])", cpu_default)
        where("...and through bind_tools([])", cpu_default.bind_tools([]))
        where(
            "constructor instance_tags=['cpu']",
            ChatOllamaPool(model=MODEL, pool=llm.provider, instance_tags=["cpu"]),
        )
        where("...overridden per call with ['gpu']", cpu_default, instance_tags=["gpu"])

        # A model no server has: the pool answers with the fallback model instead.
        reply = llm.invoke("Hello", model="llama3.3:70b", fallback_model=MODEL)
        pool = reply.response_metadata["pool"]
        print(
            f"asked for {pool['requested_model']}, answered by {reply.response_metadata['model_name']} "
            f"on {pool['instance_id']} (fallback_used={pool['fallback_used']})"
        )
        llm.close()


if __name__ == "__main__":
    main()
