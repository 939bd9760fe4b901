"""Scenario 8, gateway: what ``gleitzeit-llm serve`` adds to a call, beside LiteLLM's proxy.

One emulator process with zero model time (``time_scale=0``) and one model resident, as in the
overhead scenario. In front of it, each in its own process on 127.0.0.1: the gateway (a pool of
that one instance, ``max_concurrent`` 64 so the pool never queues) and, when it is installed in
``bench/.venv-litellm`` (``make bench-litellm``), LiteLLM's proxy with the same server as an
``ollama_chat`` deployment. One load generator (httpx, keep-alive) calls every client at
concurrency 1 and 64, interleaved as the overhead scenario does (call by call at concurrency 1,
batches in rotating order at 64), so machine noise hits a subject and its baseline alike.

Clients (a request is the same chat, ``stream: false`` unless named ``_stream``):

* ``direct`` / ``direct_stream``: the emulator's ``/api/chat``, no proxy: the baseline.
* ``gateway`` / ``gateway_stream``: the gateway's ``/api/chat`` (Ollama's API, relayed).
* ``gateway_openai`` / ``gateway_openai_stream``: the gateway's ``/v1/chat/completions``.
* ``litellm_openai`` / ``litellm_openai_stream``: LiteLLM's ``/v1/chat/completions``.

Both proxies run with an API key (``Authorization: Bearer``), as deployed ones do.

Per run and client: p50/p90/p99, throughput, and the CPU time per call of the load generator and
of the proxy process (with its workers), which shared-machine noise disturbs far less than wall
time. A subject's added latency is its percentile minus its baseline's in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench import servers
from bench._util import MODEL, chat_calls, closed_loop, emulators, latency_summary, log, summarise_clients

PARAMS = {
    "full": {
        "runs": 3,
        "concurrency": [1, 64],
        "batch": {"1": 1, "64": 256},
        "rounds": {"1": 100, "64": 2},
        "clients": None,  # None: every client; or a list of names
        "litellm": True,
        # LiteLLM's proxy is about ten times slower per call here: it takes part in this share of
        # the rounds at concurrency 1 and runs batches this much smaller at 64, so a run does not
        # take ten times as long (its percentiles and throughput come from fewer calls).
        "litellm_share": 0.5,
    },
    "quick": {
        "runs": 1,
        "concurrency": [1, 64],
        "batch": {"1": 1, "64": 128},
        "rounds": {"1": 30, "64": 1},
        "clients": None,
        "litellm": True,
        "litellm_share": 0.5,
    },
}

#: Both proxies require a key, as deployed ones do (LiteLLM refuses to start without a master key);
#: a fresh one per run, never logged.
API_KEY = "sk-bench-" + secrets.token_hex(24)

# subject -> baseline, each ratio taken within one run.
PAIRS = [
    ("gateway", "direct"),
    ("gateway_stream", "direct_stream"),
    ("gateway_openai", "direct"),
    ("gateway_openai_stream", "direct_stream"),
    ("litellm_openai", "direct"),
    ("litellm_openai_stream", "direct_stream"),
    ("gateway_openai", "litellm_openai"),
    ("gateway_openai_stream", "litellm_openai_stream"),
]


@dataclass
class Client:
    name: str
    label: str
    call: Callable[[], Awaitable[Any]]
    server: servers.ServerProcess | None  # whose CPU a call costs besides the emulator's
    share: float = 1.0  # of the rounds (concurrency 1) or of the batch size (higher) it takes part in
    errors: int = 0  # failed calls (counted, with their time, not raised: one must not end a run)
    last_error: str | None = None

    async def measured(self) -> None:
        try:
            await self.call()
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]


def _http_client(url: str, api_key: str | None = None) -> Any:
    import httpx

    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
        timeout=60.0,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
    )


OPENAI_CHAT = "/v1/chat/completions"


def _both(http: Any, name: str, what: str, path: str, server: servers.ServerProcess | None) -> list[Client]:
    """The plain and the streamed client of one route (``name`` and ``name_stream``)."""
    plain, streamed = chat_calls(http, path, sse=path == OPENAI_CHAT)
    return [
        Client(name, f"httpx -> {what}", plain, server),
        Client(f"{name}_stream", f"httpx -> {what}, stream: true", streamed, server),
    ]


def _start_proxies(
    params: dict[str, Any], emu_url: str, wanted: set[str] | None
) -> tuple[dict[str, servers.ServerProcess], dict[str, str]]:
    procs: dict[str, servers.ServerProcess] = {}
    skipped: dict[str, str] = {}

    def want(prefix: str) -> bool:
        return wanted is None or any(n.startswith(prefix) for n in wanted)

    if want("gateway"):
        why = servers.gateway_available()
        if why is None:
            try:
                instances = [{"id": "emu", "url": emu_url, "max_concurrent": 64}]
                procs["gateway"] = servers.gateway_server(instances, API_KEY)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            skipped["gateway"] = why[:600]
    if want("litellm") and params.get("litellm", True):
        why = servers.litellm_available()
        if why is None:
            try:
                procs["litellm"] = servers.litellm_server(MODEL, [emu_url], API_KEY)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            skipped["litellm"] = why[:600]
    for name, why in skipped.items():
        log(f"gateway scenario: {name} skipped: {why}")
    return procs, skipped


async def _clients(
    emu_url: str,
    procs: dict[str, servers.ServerProcess],
    wanted: set[str] | None,
    skipped: dict[str, str],
    share: float,
) -> tuple[list[Client], list[Any]]:
    https = [_http_client(emu_url)]
    clients = _both(https[0], "direct", "emulator /api/chat", "/api/chat", None)
    if "gateway" in procs:
        https.append(_http_client(procs["gateway"].url, API_KEY))
        clients += _both(https[-1], "gateway", "gateway /api/chat", "/api/chat", procs["gateway"])
        clients += _both(
            https[-1], "gateway_openai", "gateway /v1/chat/completions", OPENAI_CHAT, procs["gateway"]
        )
    if "litellm" in procs:
        https.append(_http_client(procs["litellm"].url, API_KEY))
        clients += _both(
            https[-1], "litellm_openai", "LiteLLM proxy /v1/chat/completions", OPENAI_CHAT, procs["litellm"]
        )
    if wanted is not None:
        clients = [c for c in clients if c.name in wanted]
    for client in clients:
        if client.name.startswith("litellm"):
            client.share = share
    working = []
    for client in clients:  # each must actually work to be measured
        try:
            await client.call()
            working.append(client)
        except Exception as exc:
            skipped[client.name] = f"{type(exc).__name__}: {exc}"[:400]
            log(f"gateway scenario: {client.name} skipped: {skipped[client.name]}")
    return working, https


async def _batch(client: Client, conc: int, batch: int) -> tuple[list[float], float, float, float]:
    """Latencies, wall seconds, load-generator CPU seconds and proxy CPU seconds of one batch."""
    server0 = client.server.cpu_seconds() if client.server else 0.0
    if conc == 1 and batch == 1:
        c0, t0 = time.process_time(), time.perf_counter()
        await client.measured()
        seconds = time.perf_counter() - t0
        got, cpu = [seconds], time.process_time() - c0
    else:
        got, seconds, cpu = await closed_loop(client.measured, conc, batch)
    server = (client.server.cpu_seconds() - server0) if client.server else 0.0
    return got, seconds, cpu, server


async def _measure(
    params: dict[str, Any], clients: list[Client], emu: Any
) -> list[dict[int, dict[str, Any]]]:
    per_run: list[dict[int, dict[str, Any]]] = []
    for run in range(params["runs"]):
        result: dict[int, dict[str, Any]] = {}
        for conc in params["concurrency"]:
            batch = params["batch"].get(str(conc), 4 * conc)
            rounds = params["rounds"].get(str(conc), 3)
            for client in clients:  # warm connections at this concurrency
                await closed_loop(client.measured, conc, int(max(2 * conc, 10) * client.share))
            lat: dict[str, list[float]] = {c.name: [] for c in clients}
            sums = {c.name: [0.0, 0.0, 0.0] for c in clients}  # wall, client CPU, proxy CPU
            # The proxy's CPU clock ticks in 10 ms, far coarser than a call at concurrency 1; the
            # sum of the per-call differences is still right on average over hundreds of calls.
            for rnd in range(rounds):
                shift = (run * rounds + rnd) % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    if conc == 1 and batch == 1 and rnd % round(1 / client.share):
                        continue
                    size = batch if conc == 1 else max(conc, int(batch * client.share))
                    got, seconds, cpu, server = await _batch(client, conc, size)
                    lat[client.name].extend(got)
                    for i, value in enumerate((seconds, cpu, server)):
                        sums[client.name][i] += value
            result[conc] = {
                name: {
                    **latency_summary(values),
                    "throughput_rps": len(values) / sums[name][0],
                    "cpu_us_per_request": sums[name][1] / len(values) * 1e6,
                    "proxy_cpu_us_per_request": sums[name][2] / len(values) * 1e6,
                }
                for name, values in lat.items()
            }
        per_run.append(result)
        await asyncio.to_thread(emu.clear_log)  # the emulator's request log grows without bound
        first = result[params["concurrency"][0]]
        log(
            f"gateway run {run + 1}/{params['runs']}: c={params['concurrency'][0]} p50 "
            + ", ".join(f"{n}={v['p50_ms']:.2f}ms" for n, v in first.items())
        )
    return per_run


def _summarise(
    params: dict[str, Any], names: list[str], per_run: list[dict[int, dict[str, Any]]]
) -> dict[str, Any]:
    keys = ("p50_ms", "p90_ms", "p99_ms", "throughput_rps", "cpu_us_per_request", "proxy_cpu_us_per_request")
    by_conc: dict[str, Any] = {}
    for conc in params["concurrency"]:
        by_conc[str(conc)] = summarise_clients(names, PAIRS, [r[conc] for r in per_run], keys)
    return {"by_concurrency": by_conc}


async def _run_all(params: dict[str, Any], emu: Any, procs: dict[str, Any], skipped: dict[str, str]) -> Any:
    wanted = set(params["clients"]) if params.get("clients") else None
    clients, https = await _clients(emu.url, procs, wanted, skipped, params.get("litellm_share", 1.0))
    try:
        per_run = await _measure(params, clients, emu)
    finally:
        for http in https:
            with contextlib.suppress(Exception):
                await http.aclose()
    return clients, per_run


def run(params: dict[str, Any]) -> dict[str, Any]:
    settings = {"models": [MODEL], "loaded": [MODEL], "time_scale": 0, "num_parallel": 64}
    wanted = set(params["clients"]) if params.get("clients") else None
    with emulators(1, **settings) as (emu,):
        procs, skipped = _start_proxies(params, emu.url, wanted)
        try:
            clients, per_run = asyncio.run(_run_all(params, emu, procs, skipped))
        finally:
            for proc in procs.values():
                proc.stop()
    result = _summarise(params, [c.name for c in clients], per_run)
    return {
        "params": params,
        "clients": {c.name: c.label for c in clients},
        "errors": {c.name: {"count": c.errors, "last": c.last_error} for c in clients if c.errors},
        "skipped": skipped,
        "litellm_version": servers.litellm_version() if "litellm" in procs else None,
        "emulator": settings,
        **result,
    }
