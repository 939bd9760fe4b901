"""Scenario 1, overhead: what the pool adds to one call, against plain clients on the same server.

One emulator process with zero model time (``time_scale=0``: only the server's own HTTP and JSON
work remains) and one model resident. Every client talks to that same server, at concurrency 1,
16 and 64, interleaved: at concurrency 1 the clients take turns call by call, at higher
concurrency in small batches, the order rotated each round, so machine noise hits the subject
and its baseline alike. Per run we take each client's p50/p99, throughput and the client
process's CPU time per call (far less sensitive than wall time to other processes on the
machine); the added latency of a subject is its percentile minus its baseline's percentile in
the same run.

Clients (the optional ones are skipped with a note when they cannot be imported or built):

* ``httpx``: one ``httpx.AsyncClient`` (keep-alive pool as large as the pool's), ``stream: false``.
* ``httpx_stream``: the same client with ``stream: true``, NDJSON lines decoded one by one. The
  pool always streams on the wire (see docs/routing.md), so this is the like-for-like baseline.
* ``pool``: ``OllamaPoolProvider.chat`` with one instance (``max_concurrent`` 64, so the pool never
  queues), default settings otherwise (health checks every 30 s included).
* ``ChatOllama``: langchain-ollama's ``ainvoke``.
* ``ChatOllamaPool``: langchain-gleitzeit's ``ainvoke`` on the same kind of pool.
* ``llamaindex_Ollama`` and ``OllamaPool``: llama-index's ``achat``, plain and pooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench._util import (
    MESSAGES,
    MODEL,
    chat_calls,
    closed_loop,
    emulators,
    latency_summary,
    log,
    summarise_clients,
)

PARAMS = {
    "full": {
        "runs": 5,
        "concurrency": [1, 16, 64],
        # By concurrency: requests per batch and batches (rounds) per client and run. At
        # concurrency 1 a batch is one call, so the clients take turns call by call.
        "batch": {"1": 1, "16": 64, "64": 128},
        "rounds": {"1": 150, "16": 3, "64": 2},
        "clients": None,  # None: every client; or a list of names
    },
    "quick": {
        "runs": 2,
        "concurrency": [1, 16],
        "batch": {"1": 1, "4": 16, "16": 32, "64": 64},
        "rounds": {"1": 30, "4": 2, "16": 2, "64": 2},
        "clients": None,
    },
}

# subject -> baseline: each ratio is taken against its baseline from the same run.
PAIRS = [
    ("pool", "httpx"),
    ("pool", "httpx_stream"),
    ("ChatOllamaPool", "ChatOllama"),
    ("ChatOllamaPool", "httpx"),
    ("OllamaPool", "llamaindex_Ollama"),
    ("OllamaPool", "httpx"),
    ("ChatOllama", "httpx"),
]


@dataclass
class Client:
    name: str
    label: str
    call: Callable[[], Awaitable[Any]]
    close: Callable[[], Awaitable[None]]
    samples: dict[int, list[float]] = field(default_factory=dict)
    wall: dict[int, float] = field(default_factory=dict)


async def _nothing() -> None:
    return None


async def _httpx_clients(url: str) -> list[Client]:
    import httpx

    client = httpx.AsyncClient(
        base_url=url,
        timeout=60.0,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
    )
    plain, streamed = chat_calls(client)
    return [
        Client("httpx", "plain httpx, stream: false", plain, client.aclose),
        Client("httpx_stream", "plain httpx, stream: true (NDJSON)", streamed, _nothing),
    ]


async def _pool_client(url: str) -> tuple[Client, Any]:
    from gleitzeit_llm import OllamaPoolProvider

    provider = OllamaPoolProvider(instances=[{"id": "emu", "url": url, "max_concurrent": 64}])
    await provider.initialize()

    async def call() -> Any:
        return await provider.chat(MODEL, MESSAGES)

    return Client("pool", "OllamaPoolProvider.chat, one instance", call, provider.close), provider


async def _chat_ollama(url: str) -> Client:
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model=MODEL, base_url=url)
    messages = [("user", MESSAGES[0]["content"])]

    async def call() -> Any:
        return await llm.ainvoke(messages)

    return Client("ChatOllama", "langchain_ollama.ChatOllama.ainvoke", call, _nothing)


def _build(cls: Any, attempts: list[dict[str, Any]]) -> Any:
    """The first constructor form the (still evolving) integration accepts."""
    errors = []
    for kwargs in attempts:
        try:
            return cls(**kwargs)
        except Exception as exc:
            errors.append(f"{sorted(kwargs)}: {type(exc).__name__}: {exc}")
    raise RuntimeError("no constructor form worked: " + " | ".join(errors))


async def _chat_ollama_pool(url: str, provider: Any) -> Client:
    import langchain_gleitzeit

    cls = getattr(langchain_gleitzeit, "ChatOllamaPool", None)
    if cls is None:
        raise ImportError("langchain_gleitzeit has no ChatOllamaPool yet")
    instances = [{"id": "emu", "url": url, "max_concurrent": 64}]
    llm = _build(cls, [{"model": MODEL, "pool": provider}, {"model": MODEL, "instances": instances}])
    messages = [("user", MESSAGES[0]["content"])]

    async def call() -> Any:
        return await llm.ainvoke(messages)

    return Client("ChatOllamaPool", "langchain_gleitzeit.ChatOllamaPool.ainvoke", call, _nothing)


async def _llamaindex_ollama(url: str) -> Client:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.ollama import Ollama

    llm = Ollama(model=MODEL, base_url=url, request_timeout=60.0)
    messages = [ChatMessage(role="user", content=MESSAGES[0]["content"])]

    async def call() -> Any:
        return await llm.achat(messages)

    return Client("llamaindex_Ollama", "llama_index.llms.ollama.Ollama.achat", call, _nothing)


async def _ollama_pool(url: str, provider: Any) -> Client:
    from llama_index.core.llms import ChatMessage

    import llama_index.llms.gleitzeit as module

    cls = getattr(module, "OllamaPool", None)
    if cls is None:
        raise ImportError("llama_index.llms.gleitzeit has no OllamaPool yet")
    instances = [{"id": "emu", "url": url, "max_concurrent": 64}]
    llm = _build(cls, [{"model": MODEL, "pool": provider}, {"model": MODEL, "instances": instances}])
    messages = [ChatMessage(role="user", content=MESSAGES[0]["content"])]

    async def call() -> Any:
        return await llm.achat(messages)

    return Client("OllamaPool", "llama_index.llms.gleitzeit.OllamaPool.achat", call, _nothing)


async def _clients(url: str, wanted: list[str] | None) -> tuple[list[Client], dict[str, str]]:
    clients = await _httpx_clients(url)
    pool, provider = await _pool_client(url)
    clients.append(pool)
    skipped: dict[str, str] = {}
    optional: list[tuple[str, Callable[[], Awaitable[Client]]]] = [
        ("ChatOllama", lambda: _chat_ollama(url)),
        ("ChatOllamaPool", lambda: _chat_ollama_pool(url, provider)),
        ("llamaindex_Ollama", lambda: _llamaindex_ollama(url)),
        ("OllamaPool", lambda: _ollama_pool(url, provider)),
    ]
    for name, factory in optional:
        if wanted is not None and name not in wanted:
            continue
        try:
            client = await factory()
            await client.call()  # it must actually work against the emulator to be measured
            clients.append(client)
        except Exception as exc:
            skipped[name] = f"skipped: {type(exc).__name__}: {exc}"[:400]
            log(f"overhead: {name} {skipped[name]}")
    if wanted is not None:
        clients = [c for c in clients if c.name in wanted]
    return clients, skipped


async def _one_call(call: Callable[[], Awaitable[Any]]) -> tuple[list[float], float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    await call()
    seconds = time.perf_counter() - t0
    return [seconds], seconds, time.process_time() - c0


async def _measure(params: dict[str, Any], emu: Any) -> dict[str, Any]:
    clients, skipped = await _clients(emu.url, params.get("clients"))
    runs = params["runs"]
    per_run: list[dict[int, dict[str, dict[str, float]]]] = []
    try:
        for run in range(runs):
            result: dict[int, dict[str, dict[str, float]]] = {}
            for conc in params["concurrency"]:
                batch = params["batch"].get(str(conc), 4 * conc)
                rounds = params["rounds"].get(str(conc), 3)
                for client in clients:  # warm connections at this concurrency
                    await closed_loop(client.call, conc, max(2 * conc, 10))
                lat: dict[str, list[float]] = {c.name: [] for c in clients}
                wall: dict[str, float] = {c.name: 0.0 for c in clients}
                cpu: dict[str, float] = {c.name: 0.0 for c in clients}
                for rnd in range(rounds):
                    shift = (run * rounds + rnd) % len(clients)
                    for client in clients[shift:] + clients[:shift]:
                        if conc == 1 and batch == 1:
                            got, seconds, cpu_seconds = await _one_call(client.call)
                        else:
                            got, seconds, cpu_seconds = await closed_loop(client.call, conc, batch)
                        lat[client.name].extend(got)
                        wall[client.name] += seconds
                        cpu[client.name] += cpu_seconds
                result[conc] = {
                    name: {
                        **latency_summary(values),
                        "throughput_rps": len(values) / wall[name],
                        "cpu_us_per_request": cpu[name] / len(values) * 1e6,
                    }
                    for name, values in lat.items()
                }
            per_run.append(result)
            await asyncio.to_thread(emu.clear_log)  # the emulator's request log grows without bound
            pool = result[params["concurrency"][0]]
            log(
                f"overhead run {run + 1}/{runs}: c={params['concurrency'][0]} p50 "
                + ", ".join(f"{n}={v['p50_ms']:.2f}ms" for n, v in pool.items())
            )
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
    return _summarise(params, clients, skipped, per_run)


def _summarise(
    params: dict[str, Any],
    clients: list[Client],
    skipped: dict[str, str],
    per_run: list[dict[int, dict[str, dict[str, float]]]],
) -> dict[str, Any]:
    names = [c.name for c in clients]
    by_conc: dict[str, Any] = {}
    for conc in params["concurrency"]:
        block = summarise_clients(
            names,
            PAIRS,
            [r[conc] for r in per_run],
            ("p50_ms", "p90_ms", "p99_ms", "throughput_rps", "cpu_us_per_request"),
            ("cpu_us_per_request",),
        )
        for pair in block["pairs"].values():  # the name the results and the report have used
            pair["added_cpu_us"] = pair.pop("added_cpu_us_per_request")
        by_conc[str(conc)] = block
    return {
        "params": params,
        "clients": {c.name: c.label for c in clients},
        "skipped": skipped,
        "by_concurrency": by_conc,
    }


def run(params: dict[str, Any]) -> dict[str, Any]:
    settings = {
        "models": [MODEL],
        "loaded": [MODEL],
        "time_scale": 0,
        "num_parallel": 64,
    }
    with emulators(1, **settings) as (emu,):
        result = asyncio.run(_measure(params, emu))
    result["emulator"] = settings
    return result
