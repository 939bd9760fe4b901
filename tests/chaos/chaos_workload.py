"""A seeded chaos run: mixed calls through the core and both framework adapters while emulated
servers are stopped and restarted, hang, drop connections, send error lines, answer 503 storms and
slow down. Used by the short CI profile (test_chaos.py) and by ``make chaos`` (run.py).

Loopback only; bounded in calls and time; it stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gleitzeit_llm import GleitzeitError, OllamaPoolProvider
from gleitzeit_llm.testing import GenerationRequest, OllamaEmulator

MODEL, EMBED = "llama3.2", "nomic-embed-text"
FAULTS = ("stop", "hang", "drop", "error_line", "busy", "slow", "errors")


def numbered_reply(request: GenerationRequest) -> str:
    """``w1 w2 ... wN``: any replayed or duplicated piece breaks the sequence, so a client can tell."""
    return " ".join(f"w{i}" for i in range(1, 25))


EXPECTED = numbered_reply(None)  # type: ignore[arg-type]


@dataclass
class ChaosReport:
    seed: int
    calls: int = 0
    succeeded: int = 0
    classified: Counter[str] = field(default_factory=Counter)  # our errors, by class
    unclassified: list[str] = field(default_factory=list)  # anything else: a bug
    faults: Counter[str] = field(default_factory=Counter)
    duplicates: list[str] = field(default_factory=list)  # streams that repeated or garbled output
    by_face: Counter[str] = field(default_factory=Counter)
    loop_errors: list[str] = field(default_factory=list)
    final_status: dict[str, Any] = field(default_factory=dict)
    close_seconds: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        failed = sum(self.classified.values())
        lines = [
            f"chaos seed={self.seed}: {self.calls} calls in {self.seconds:.1f}s, {self.succeeded} succeeded, "
            f"{failed} failed with a classified error, {len(self.unclassified)} unclassified",
            f"  faults injected: {dict(self.faults)}",
            f"  calls by face: {dict(self.by_face)}",
            f"  classified errors: {dict(self.classified)}",
            f"  duplicated/garbled streams: {len(self.duplicates)}; loop errors: {len(self.loop_errors)}; "
            f"pool closed in {self.close_seconds * 1000:.0f} ms",
        ]
        lines += [f"  UNCLASSIFIED: {u}" for u in self.unclassified[:10]]
        return "\n".join(lines)


def _check_text(report: ChaosReport, face: str, text: str, complete: bool) -> None:
    if complete and text != EXPECTED:
        report.duplicates.append(f"{face}: complete answer differs: {text[:80]!r}")
    elif not complete and not EXPECTED.startswith(text):
        report.duplicates.append(f"{face}: partial answer is not a prefix: {text[:80]!r}")


class Chaos:
    def __init__(self, seed: int, *, calls: int, concurrency: int, time_scale: float) -> None:
        self.rng = random.Random(seed)
        self.report = ChaosReport(seed)
        self.target_calls = calls
        self.concurrency = concurrency
        self.emulators = [
            OllamaEmulator(
                models=[MODEL, EMBED],
                loaded=[MODEL, EMBED],
                num_parallel=4,
                keep_alive=-1,
                time_scale=time_scale,
                responder=numbered_reply,
                seed=seed + n,
            )
            for n in range(3)
        ]
        self.done = asyncio.Event()
        self._lock = threading.Lock()

    # -- the pool and its faces ---------------------------------------------------------------

    def build(self) -> None:
        for emulator in self.emulators:
            emulator.start()
        self.pool = OllamaPoolProvider(
            config={
                "instances": [
                    {"id": f"e{n}", "url": e.url, "max_concurrent": 4} for n, e in enumerate(self.emulators)
                ],
                "load_balancing": {
                    "health_check_interval": 0.2,
                    "health_check_timeout": 0.5,
                    "retry_attempts": 3,
                    "retry_backoff_base": 0.005,
                    "retry_backoff_max": 0.05,
                    "queue_timeout": 5,
                    "circuit_breaker": {
                        "failure_threshold": 3,
                        "recovery_timeout": 0.3,
                        "max_recovery_timeout": 1.0,
                    },
                },
                "timeouts": {"connect": 1.0, "first_byte": 1.0, "idle": 1.0},
            }
        )
        self.faces: list[tuple[str, Any]] = [
            ("core.chat", self._core_chat),
            ("core.chat_sync", self._core_chat_sync),
            ("core.stream", self._core_stream),
            ("core.stream_sync", self._core_stream_sync),
            ("core.embed", self._core_embed),
        ]
        try:
            from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings

            self.lc_chat = ChatOllamaPool(pool=self.pool, model=MODEL)
            self.lc_embed = OllamaPoolEmbeddings(pool=self.pool, model=EMBED)
            self.faces += [
                ("langchain.ainvoke", self._lc_ainvoke),
                ("langchain.invoke", self._lc_invoke),
                ("langchain.astream", self._lc_astream),
                ("langchain.embed", self._lc_embed),
            ]
        except ImportError:  # pragma: no cover - the adapter is part of the repo
            pass
        try:
            from llama_index.core.llms import ChatMessage

            from llama_index.llms.gleitzeit import OllamaPool

            self.li_llm = OllamaPool(pool=self.pool, model=MODEL)
            self.li_message = ChatMessage(role="user", content="hello")
            self.faces += [
                ("llama_index.achat", self._li_achat),
                ("llama_index.chat", self._li_chat),
                ("llama_index.astream_chat", self._li_astream),
            ]
        except ImportError:  # pragma: no cover - the adapter is part of the repo
            pass

    async def _core_chat(self) -> None:
        reply = await self.pool.chat(MODEL, [{"role": "user", "content": "hello"}])
        _check_text(self.report, "core.chat", reply.message.content, True)

    async def _core_chat_sync(self) -> None:
        reply = await asyncio.to_thread(self.pool.chat_sync, MODEL, [{"role": "user", "content": "hello"}])
        _check_text(self.report, "core.chat_sync", reply.message.content, True)

    async def _core_stream(self) -> None:
        text, done = "", False
        try:
            async for chunk in self.pool.stream_chat(MODEL, [{"role": "user", "content": "hello"}]):
                text += chunk.message.content
                done = chunk.done
        finally:
            _check_text(self.report, "core.stream", text, done)

    async def _core_stream_sync(self) -> None:
        def consume() -> None:
            text, done = "", False
            try:
                for chunk in self.pool.stream_chat_sync(MODEL, [{"role": "user", "content": "hello"}]):
                    text += chunk.message.content
                    done = chunk.done
            finally:
                _check_text(self.report, "core.stream_sync", text, done)

        await asyncio.to_thread(consume)

    async def _core_embed(self) -> None:
        result = await self.pool.embed(EMBED, ["alpha", "beta", "gamma"])
        assert len(result.embeddings) == 3

    async def _lc_ainvoke(self) -> None:
        message = await self.lc_chat.ainvoke("hello")
        _check_text(self.report, "langchain.ainvoke", message.content, True)

    async def _lc_invoke(self) -> None:
        message = await asyncio.to_thread(self.lc_chat.invoke, "hello")
        _check_text(self.report, "langchain.invoke", message.content, True)

    async def _lc_astream(self) -> None:
        text = ""
        try:
            async for chunk in self.lc_chat.astream("hello"):
                text += chunk.content
        finally:
            _check_text(self.report, "langchain.astream", text, text == EXPECTED)

    async def _lc_embed(self) -> None:
        vectors = await self.lc_embed.aembed_documents(["alpha", "beta"])
        assert len(vectors) == 2

    async def _li_achat(self) -> None:
        response = await self.li_llm.achat([self.li_message])
        _check_text(self.report, "llama_index.achat", response.message.content or "", True)

    async def _li_chat(self) -> None:
        response = await asyncio.to_thread(self.li_llm.chat, [self.li_message])
        _check_text(self.report, "llama_index.chat", response.message.content or "", True)

    async def _li_astream(self) -> None:
        text = ""
        gen = await self.li_llm.astream_chat([self.li_message])
        async for chunk in gen:
            text = chunk.message.content or ""
        _check_text(self.report, "llama_index.astream_chat", text, text == EXPECTED)

    # -- running ------------------------------------------------------------------------------

    async def _one(self, name: str, face: Any) -> None:
        self.report.by_face[name] += 1
        try:
            await face()
        except GleitzeitError as exc:
            self.report.classified[type(exc).__name__] += 1
        except Exception as exc:
            self.report.unclassified.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            self.report.succeeded += 1

    async def _worker(self) -> None:
        while self.report.calls < self.target_calls:
            self.report.calls += 1
            name, face = self.rng.choice(self.faces)
            await self._one(name, face)
        self.done.set()

    async def _faults(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.done.wait(), self.rng.uniform(0.05, 0.25))
            if self.done.is_set():
                break
            emulator = self.rng.choice(self.emulators)
            kind = self.rng.choice(FAULTS)
            self.report.faults[kind] += 1
            await asyncio.to_thread(self._inject, emulator, kind)

    def _inject(self, emulator: OllamaEmulator, kind: str) -> None:
        if not emulator.running:
            emulator.start()  # bring back whatever an earlier fault stopped
            return
        emulator.clear_faults()
        if kind == "stop":
            emulator.stop()
        elif kind == "hang":
            emulator.set_faults(hang=True)
        elif kind == "drop":
            emulator.set_faults(drop_after_chunks=self.rng.randint(0, 6))
        elif kind == "error_line":
            emulator.set_faults(error_after_chunks=self.rng.randint(1, 6))
        elif kind == "busy":
            emulator.set_faults(busy=True)
        elif kind == "slow":
            emulator.set_faults(slow_factor=5.0)
        else:
            emulator.set_faults(error_rate=0.5)

    async def run(self) -> ChaosReport:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: self.report.loop_errors.append(str(ctx.get("message"))))
        started = time.monotonic()
        await asyncio.to_thread(self.build)
        await self.pool.initialize()
        await asyncio.gather(self._faults(), *(self._worker() for _ in range(self.concurrency)))
        # Calm: every server up and healthy again, then the state must say so.
        for emulator in self.emulators:
            emulator.clear_faults()
            if not emulator.running:
                emulator.start()
        await asyncio.sleep(self.pool.config.load_balancing.circuit_breaker.max_recovery_timeout)
        await self.pool.manager.acheck_health_now()
        await self.pool.manager.acheck_health_now()
        for _ in range(12):
            await self._one("calm.chat", self._core_chat)
        self.report.final_status = self.pool.status()
        self.report.seconds = time.monotonic() - started
        close_started = time.monotonic()
        await asyncio.wait_for(self.pool.close(), 5)
        self.report.close_seconds = time.monotonic() - close_started
        await asyncio.to_thread(self._close_emulators)
        return self.report

    def _close_emulators(self) -> None:
        for emulator in self.emulators:
            emulator.close()


def run_chaos(
    seed: int = 0, *, calls: int = 300, concurrency: int = 8, time_scale: float = 0.002
) -> ChaosReport:
    """Run one chaos profile on a fresh event loop and return its report."""
    return asyncio.run(Chaos(seed, calls=calls, concurrency=concurrency, time_scale=time_scale).run())
