"""The embedded demo: three emulated Ollama servers, one pool, a LangChain chain and a LlamaIndex
query engine running through it at the same time, a server that dies part-way, and what the pool
did about it.

``make demo`` / ``gleitzeit-llm demo`` runs it offline on loopback in well under a minute. With
``GLEITZEIT_OLLAMA_INSTANCES`` set, the same workload runs against those real servers instead (and
no server is stopped); ``GLEITZEIT_DEMO_MODEL`` / ``GLEITZEIT_DEMO_EMBED_MODEL`` pick the models.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from typing import Any, TextIO

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.errors import GleitzeitError
from gleitzeit_llm.observability.events import PoolEvent
from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["run_demo"]

QUESTIONS = [
    "Why is the sky blue?",
    "What is a circuit breaker in distributed systems?",
    "Name three uses of a load balancer.",
    "Explain peak-EWMA to a new engineer.",
    "When should a request fail over to another server?",
]
DOCUMENTS = [
    "Ollama serves one model per runner; OLLAMA_NUM_PARALLEL requests run at once, the rest queue.",
    "A cold model load takes seconds, so routing to a server that already has the model saves time.",
    "A circuit breaker opens after repeated failures and lets a few probe requests through later.",
    "Peak-EWMA jumps up on a slow response and decays slowly, so slow servers lose traffic at once.",
    "Spot machines can disappear at any time; a pool keeps answering by failing over.",
    "Health checks should never load a model: /api/version, /api/tags and /api/ps are free.",
]
STATUS_EVERY = 0.5  # seconds between live status lines


def _emulated() -> tuple[list[Any], PoolConfig, str, str]:
    from gleitzeit_llm.testing import OllamaEmulator

    common = {"time_scale": 0.02, "keep_alive": -1}  # modelled seconds run 50x faster
    gpu = OllamaEmulator(models=["llama3.2", "llama3.2:70b", "nomic-embed-text"],
                         loaded=["llama3.2", "llama3.2:70b", "nomic-embed-text"], num_parallel=4,
                         tokens_per_second=120, **common)  # fmt: skip
    cpu = OllamaEmulator(models=["llama3.2", "nomic-embed-text"], loaded=["llama3.2", "nomic-embed-text"],
                         num_parallel=2, tokens_per_second=15, **common)  # fmt: skip
    spot = OllamaEmulator(models=["llama3.2", "nomic-embed-text"], loaded=["llama3.2", "nomic-embed-text"],
                          num_parallel=2, tokens_per_second=40, **common)  # fmt: skip
    emulators = [gpu.start(), cpu.start(), spot.start()]
    config = PoolConfig.from_dict(
        {
            "instances": [
                {"id": "gpu-box", "url": gpu.url, "tags": ["gpu"], "max_concurrent": 4},
                {"id": "cpu-box", "url": cpu.url, "tags": ["cpu"], "max_concurrent": 2},
                {"id": "spot-box", "url": spot.url, "tags": ["cpu", "spot"], "max_concurrent": 2},
            ],
            "load_balancing": {
                "strategy": "least_loaded",
                # Real traffic finds the dead server before the next health check does, so the
                # breaker trip is what the demo shows; the restart is then probed explicitly.
                "health_check_interval": 5.0,
                "health_check_timeout": 1.0,
                "retry_backoff_base": 0.01,
                "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 1.0},
            },
        }
    )
    return emulators, config, "llama3.2", "nomic-embed-text"


class _Demo:
    def __init__(self, out: TextIO, requests: int) -> None:
        self.out = out
        self.requests = requests
        self.real = bool(os.environ.get("GLEITZEIT_OLLAMA_INSTANCES"))
        self.events: Counter[str] = Counter()
        self.changes: list[str] = []
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.completed = 0
        self.stopped_at: int | None = None

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def observe(self, event: PoolEvent) -> None:
        self.events[event.kind] += 1
        if event.kind in ("breaker_state_changed", "health_state_changed"):
            what = "breaker" if event.kind.startswith("breaker") else "health "
            self.changes.append(f"{what} {event.instance}: {event.old} -> {event.new}")  # type: ignore[attr-defined]
            self.say(f"    ~ {self.changes[-1]}")
        elif event.kind == "failover":
            self.say(f"    ~ failover away from {event.from_instance} ({event.error.split(':')[0]})")  # type: ignore[attr-defined]

    async def timed(self, label: str, call: Any) -> None:
        started = time.perf_counter()
        try:
            await call
        except GleitzeitError as exc:
            self.failures.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            self.latencies.append(time.perf_counter() - started)
        self.completed += 1
        if self.stopped_at is None and self.completed >= self.requests // 3 and self.emulators:
            # Stop it while it is serving, so the calls it had in flight visibly fail over.
            busy = self.provider.status()["instances"]["spot-box"]["active_requests"]
            if busy >= 1:
                self.stopped_at = self.completed
                self.emulators[2].stop()
                self.say(
                    f"  !! spot-box stopped after {self.completed} calls, {busy} of them in flight there"
                )

    async def langchain_job(self, provider: OllamaPoolProvider, model: str, registry: Any) -> int:
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate

        from langchain_gleitzeit import ChatOllamaPool, PrometheusCallbackHandler

        llm = ChatOllamaPool(
            pool=provider, model=model, callbacks=[PrometheusCallbackHandler(registry=registry)]
        )
        prompt = ChatPromptTemplate.from_messages(
            [("system", "Answer in one sentence."), ("user", "{question}")]
        )
        chain = prompt | llm | StrOutputParser()
        big = (
            prompt
            | llm.bind(require_gpu=True, model=f"{model}:70b" if not self.real else model)
            | StrOutputParser()
        )
        gate = asyncio.Semaphore(4)
        count = self.requests * 2 // 3

        async def one(n: int) -> None:
            async with gate:
                runnable = big if n % 5 == 0 else chain
                await self.timed("langchain", runnable.ainvoke({"question": QUESTIONS[n % len(QUESTIONS)]}))

        await asyncio.gather(*(one(n) for n in range(count)))
        return count

    async def llama_index_job(
        self, provider: OllamaPoolProvider, model: str, embed_model: str, registry: Any
    ) -> int:
        from llama_index.core import Document, VectorStoreIndex
        from llama_index.core.instrumentation import get_dispatcher

        from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
        from llama_index.llms.gleitzeit import OllamaPool, PrometheusEventHandler

        handler = PrometheusEventHandler(registry=registry)
        dispatcher = get_dispatcher()
        dispatcher.add_event_handler(handler)
        try:
            embedding = OllamaPoolEmbedding(pool=provider, model_name=embed_model)
            llm = OllamaPool(pool=provider, model=model)
            index = await asyncio.to_thread(
                VectorStoreIndex.from_documents, [Document(text=t) for t in DOCUMENTS], embed_model=embedding
            )
            engine = index.as_query_engine(llm=llm, similarity_top_k=2)
            gate = asyncio.Semaphore(3)
            count = self.requests - self.requests * 2 // 3

            async def one(n: int) -> None:
                async with gate:
                    await self.timed("llama_index", engine.aquery(QUESTIONS[n % len(QUESTIONS)]))

            await asyncio.gather(*(one(n) for n in range(count)))
            return count
        finally:
            dispatcher.event_handlers.remove(handler)

    async def live_status(self, provider: OllamaPoolProvider, done: asyncio.Event) -> None:
        while not done.is_set():
            status = provider.status()
            parts = []
            for instance_id, info in status["instances"].items():
                breaker = "open" if info["circuit_breaker_open"] else info["circuit_state"].replace("_", "-")
                state, busy = info["state"], info["active_requests"]
                parts.append(f"{instance_id} {state:<9} {busy} in flight, breaker {breaker}")
            self.say(f"  [{self.completed:>3}/{self.requests}] " + " | ".join(parts))
            try:
                await asyncio.wait_for(done.wait(), STATUS_EVERY)
            except asyncio.TimeoutError:
                pass

    async def run(self) -> int:
        from prometheus_client import CollectorRegistry, generate_latest

        from gleitzeit_llm.observability.prometheus import instrument

        self.emulators: list[Any] = []
        if self.real:
            config = PoolConfig.from_env()
            model = os.environ.get("GLEITZEIT_DEMO_MODEL", "llama3.2")
            embed_model = os.environ.get("GLEITZEIT_DEMO_EMBED_MODEL", "nomic-embed-text")
            self.say(
                f"Using the real servers in GLEITZEIT_OLLAMA_INSTANCES ({len(config.instances)} instances)."
            )
        else:
            self.emulators, config, model, embed_model = _emulated()
            self.say("Started three emulated Ollama servers on 127.0.0.1:")
            for inst, emu in zip(config.instances, self.emulators, strict=True):
                self.say(f"  {inst.id:<9} {emu.url}  tags={','.join(inst.tags)}")
        registry = CollectorRegistry()
        try:
            async with OllamaPoolProvider(config=config) as provider:
                self.provider = provider
                instrument(provider, registry)
                provider.events.subscribe(self.observe)
                self.say(
                    "\nA LangChain chain (prompt | ChatOllamaPool | parser) and a LlamaIndex query engine "
                    "(VectorStoreIndex + OllamaPool)\n"
                    f"share one pool: {self.requests} calls, every 5th chain call needs the GPU box.\n"
                )
                done = asyncio.Event()
                started = time.perf_counter()
                watcher = asyncio.ensure_future(self.live_status(provider, done))
                try:
                    await asyncio.gather(
                        self.langchain_job(provider, model, registry),
                        self.llama_index_job(provider, model, embed_model, registry),
                    )
                finally:
                    done.set()
                    await watcher
                elapsed = time.perf_counter() - started
                if self.emulators:
                    self.emulators[2].start()
                    self.say("\n  spot-box restarted; the pool probes it and sends it traffic again:")
                    await asyncio.sleep(config.load_balancing.circuit_breaker.recovery_timeout)
                    await provider.manager.acheck_health_now()
                    extra = await asyncio.gather(
                        *(provider.chat(model, [{"role": "user", "content": q}]) for q in QUESTIONS * 2)
                    )
                    back = sum(1 for r in extra if r.pool and r.pool.instance_id == "spot-box")
                    self.say(f"  spot-box served {back} of {len(extra)} new calls")
                status = provider.status()
            metrics = generate_latest(registry).decode()
        finally:
            for emu in self.emulators:
                emu.close()
        self.summary(status, elapsed, metrics)
        return 0 if not self.failures else 1

    def summary(self, status: dict[str, Any], elapsed: float, metrics: str) -> None:
        latencies = sorted(self.latencies) or [0.0]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        self.say("\nState changes the pool saw:")
        for change in self.changes or ["none"]:
            self.say(f"  {change}")
        self.say("\nSummary")
        self.say(
            f"  calls: {self.completed}  succeeded: {len(self.latencies)}  failed: {len(self.failures)}  "
            f"in {elapsed:.1f}s"
        )
        self.say(f"  latency p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        trips = sum(1 for c in self.changes if c.startswith("breaker") and c.endswith("-> open"))
        self.say(f"  failovers: {self.events['failover']}  breaker trips: {trips}")
        self.say("  requests per instance (chat, embeddings and probes through the pool):")
        for instance_id, info in status["instances"].items():
            self.say(
                f"    {instance_id:<9} {info['successful_requests']:>4} served  state {info['state']:<9} "
                f"p50 {info['p50_response_time'] * 1000:.0f} ms  errors {info['error_rate']:.0f}%"
            )
        for failure in self.failures[:5]:
            self.say(f"  failed: {failure}")
        wanted = (
            "gleitzeit_pool_requests_total",
            "gleitzeit_pool_failovers_total",
            "gleitzeit_instance_in_flight",
            "gen_ai_client_operation_duration_seconds_count",
        )
        lines = metrics.splitlines()
        excerpt = [line for prefix in wanted for line in [x for x in lines if x.startswith(prefix)][:3]]
        self.say("\nPrometheus (an excerpt of what /metrics serves):")
        for line in excerpt:
            self.say(f"  {line}")


def run_demo(out: TextIO | None = None, requests: int = 60) -> int:
    """Run the demo and return its exit code (0 when every call succeeded)."""
    return asyncio.run(_Demo(out or sys.stdout, requests).run())
