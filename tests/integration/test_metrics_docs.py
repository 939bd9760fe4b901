"""docs/metrics.md against what is exported: every metric and label in its tables is scraped, and
every scraped metric and label is in its tables (the docs cannot drift from the code again)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gleitzeit_llm.observability.events import (
    BreakerStateChanged,
    FailoverEvent,
    FallbackEvent,
    HealthStateChanged,
    RequestFinished,
)
from gleitzeit_llm.observability.framework import CallTracker
from gleitzeit_llm.observability.metrics import CALL_LABELS
from gleitzeit_llm.observability.prometheus import instrument
from gleitzeit_llm.provider import OllamaPoolProvider

DOCS = Path(__file__).resolve().parents[2] / "docs/metrics.md"
METRIC_ROW = re.compile(
    r"^\| `((?:gleitzeit|gen_ai)_[a-z_]+)` \| (gauge|counter|histogram) \| ([^|]*) \|", re.M
)
CODE = re.compile(r"`([a-z_]+)`")


def documented() -> dict[str, tuple[str, set[str]]]:
    """metric -> (type, label names) from the docs' metric tables ("call labels" expanded)."""
    text = DOCS.read_text()
    call_labels = set(
        re.findall(r"^\| `([a-z_]+)` \| ", text.split("| call label |")[1].split("\n\n")[0], re.M)
    )
    rows: dict[str, tuple[str, set[str]]] = {}
    for name, kind, labels in METRIC_ROW.findall(text):
        names = set(CODE.findall(labels)) | (call_labels if "call labels" in labels else set())
        rows[name] = (kind, names)
    return rows


def documented_labels() -> set[str]:
    """Label names the docs' label vocabulary table describes."""
    text = DOCS.read_text().split("| label | values |")[1].split("\n\n")[0]
    return {name for cell in re.findall(r"^\| ([^|]+) \|", text, re.M) for name in CODE.findall(cell)}


def exported(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """metric (as documented: counters with _total) -> (type, label names) from the scraped text."""
    families = [f for f in text_string_to_metric_families(generate_latest(registry).decode()) if f.samples]
    # prometheus_client's *_created gauge beside each counter and histogram (the docs say so once).
    timestamped = {f.name + "_created" for f in families if f.type in ("counter", "histogram")}
    return {
        f.name + ("_total" if f.type == "counter" else ""): (
            f.type,
            {label for s in f.samples for label in s.labels if label != "le"},
        )
        for f in families
        if f.name not in timestamped
    }


async def test_the_metric_docs_match_the_exported_metrics(ollama_emulators: Any) -> None:
    (emulator,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"])
    # adaptive_concurrency: the learned-limit gauge has a series once the model answered.
    # Shared state configured but unreachable (a closed loopback port): the pool runs on local
    # state and gleitzeit_shared_state_up says 0.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    config = {
        "instances": [{"id": "gpu", "url": emulator.url}],
        "shared_state": {"url": f"redis://127.0.0.1:{closed_port}/0"},
        "load_balancing": {"adaptive_concurrency": True},
    }
    registry = CollectorRegistry()
    async with OllamaPoolProvider(config=config) as pool:
        metrics = instrument(pool, registry)
        manager = pool.manager
        await manager.acheck_health_now()  # versions, installed models, health checks
        await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])  # attempts, ttft estimate
        # Events the emulator would need faults for: each counter gets one.
        for event in (
            RequestFinished(
                "gpu", "llama3.2:latest", "success", 2.0, ttft=1.5, prompt_tokens=5, cold_load=True
            ),
            FailoverEvent("gpu", "llama3.2:latest", "InstanceFailedError: reset", 1),
            FallbackEvent("mixtral:latest", "llama3.2:latest", "missing"),
            BreakerStateChanged("gpu", "closed", "open", "test"),
            HealthStateChanged("gpu", "healthy", "degraded", "test"),
        ):
            manager.events.emit(event)
        lease = manager.try_acquire(manager.route_request("llama3.2"))  # a model in flight
        try:
            # Every per-call series, through the handlers' bookkeeping: a streamed call that failed
            # over to the fallback model, and a failed call.
            tracker = CallTracker(registry)
            tracker.start("ok", "chat", "llama3.2")
            pool_facts = {"instance_id": "gpu", "instance_url": emulator.url, "model": "llama3.2"}
            for _ in range(3):
                tracker.chunk("ok", {"pool": pool_facts})
            call = tracker.pop("ok")
            assert call is not None
            facts = {**pool_facts, "attempts": 2, "fallback_used": True}
            tracker.record_success(call, facts, input_tokens=5, output_tokens=7)
            tracker.start("failed", "chat", "llama3.2")
            tracker.fail("failed", TimeoutError())
            scraped = exported(registry)
        finally:
            manager.finish(lease, None)  # type: ignore[arg-type]
        metrics.close()

    docs = documented()
    only_docs, only_exported = sorted(set(docs) - set(scraped)), sorted(set(scraped) - set(docs))
    assert not only_docs and not only_exported, (
        f"in the docs only: {only_docs}; exported only: {only_exported}"
    )
    for name, (kind, labels) in docs.items():
        assert scraped[name] == (kind, labels), name
    assert set(CALL_LABELS) <= documented_labels()
    every_label = {label for _, labels in scraped.values() for label in labels}
    assert every_label == documented_labels(), every_label ^ documented_labels()
