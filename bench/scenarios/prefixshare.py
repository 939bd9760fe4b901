"""Scenario: the shared prompt-prefix index. Multi-turn conversations whose turns land on any of
several application processes (as a web application's workers each take whichever HTTP request
comes), ``cache_aware`` in every process, with and without shared state.

Each application process is a child (``python -m bench.scenarios.prefixshare client``) serving
chat calls sent by this harness over stdin (many at once, answered by id). Each conversation's
turns go to processes drawn at random (the same draw in both modes); between turns the
conversation "thinks" (``think`` real seconds, longer than two refresh intervals, as a user's
think time is). ``local``: each process routes on what it routed itself, so a turn that lands on
another process than the previous one finds no prefix; ``shared``: every process's index holds
what all of them routed. Measured per mode: the share of prompt tokens the emulators found cached
(their own request logs), TTFT p50/p99, and the share of turns after the first that went to the
instance of the previous turn.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import time
from typing import Any

from bench._util import MODEL, ROOT, emulators, latency_summary, log, spread
from bench.scenarios import promptcache
from bench.scenarios.scaleout import MODES

PARAMS = {
    "full": {
        "runs": 3,
        "processes": 4,
        "instances": 4,
        "slots": 4,
        "conversations": 12,
        "turns": 4,
        "context_words": 1700,
        "question_words": 17,
        "think": 0.6,
        "prompt_tokens_per_second": 200.0,
        "ttft": 0.05,
        "tokens_per_second": 20.0,
        "reply_tokens": 20,
        "time_scale": 0.05,
        "timeout": 120.0,
    },
    "quick": {
        "runs": 1,
        "processes": 2,
        "instances": 4,
        "slots": 4,
        "conversations": 8,
        "turns": 3,
        "context_words": 1700,
        "question_words": 17,
        "think": 0.5,
        "prompt_tokens_per_second": 200.0,
        "ttft": 0.05,
        "tokens_per_second": 20.0,
        "reply_tokens": 20,
        "time_scale": 0.05,
        "timeout": 60.0,
    },
}


async def _client() -> None:
    """One application process: ``{"op": "pool", "spec": ...}`` builds a fresh pool (answered
    ``{"ready": true}``), ``{"op": "chat", "id": k, "messages": [...]}`` runs a streamed call as a
    task (answered ``{"id": k, "ttft": s, "content": text, "instance": id}``, in any order),
    ``{"op": "close"}`` closes the pool, ``{"op": "quit"}`` ends the process."""
    from gleitzeit_llm import OllamaPoolProvider

    pool: Any = None
    tasks: set[asyncio.Task[None]] = set()

    async def chat(command: dict[str, Any]) -> None:
        start = time.perf_counter()
        ttft = None
        parts: list[str] = []
        reply: dict[str, Any] = {"id": command["id"]}
        try:
            stream = pool.stream_chat(MODEL, command["messages"])
            async for chunk in stream:
                if ttft is None:
                    ttft = time.perf_counter() - start
                parts.append(chunk.message.content or "")
            reply.update(ttft=ttft, content="".join(parts), instance=stream.pool.instance_id)
        except Exception as exc:
            reply.update(error=f"{type(exc).__name__}: {exc}"[:200])
        print(json.dumps(reply), flush=True)

    print("ready", flush=True)
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            return
        if op == "pool":
            spec = command["spec"]
            pool = OllamaPoolProvider(
                instances=spec["instances"],
                load_balancing=spec["load_balancing"],
                shared_state=spec.get("shared_state"),
                health_checks=False,
            )
            await pool.initialize()
            print(json.dumps({"ready": True}), flush=True)
        elif op == "chat":
            task = asyncio.create_task(chat(command))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif op == "close":
            await asyncio.gather(*tasks)
            await pool.close()
            print(json.dumps({"closed": True}), flush=True)


class _Process:
    """One client process, driven from the harness's event loop."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.control: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> _Process:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.scenarios.prefixshare",
            "client",
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        if (await proc.stdout.readline()).strip() != b"ready":
            raise RuntimeError("a client process did not start")
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply = json.loads(line)
            future = self.pending.pop(reply["id"], None) if "id" in reply else None
            if future is not None:
                future.set_result(reply)
            else:
                await self.control.put(reply)

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def ask(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return await asyncio.wait_for(self.control.get(), 60)

    async def chat(self, call_id: int, messages: list[dict[str, str]]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        self.send(op="chat", id=call_id, messages=messages)
        return await future

    async def quit(self) -> None:
        if self.proc.returncode is None:
            self.send(op="quit")
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.reader.cancel()


# -- the harness --------------------------------------------------------------------------------


def _text(rng: random.Random, words: int) -> str:
    """``words`` distinct words of 6 characters: one token each to the emulator's tokenizer."""
    return " ".join(f"w{rng.randrange(10**5):05d}" for _ in range(words))


async def _one_run(
    params: dict[str, Any], clients: list[_Process], spec: dict[str, Any], seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    n, turns = params["conversations"], params["turns"]
    contexts = [_text(rng, params["context_words"]) for _ in range(n)]
    questions = [[_text(rng, params["question_words"]) for _ in range(turns)] for _ in range(n)]
    workers = [[rng.randrange(len(clients)) for _ in range(turns)] for _ in range(n)]
    starts = [rng.uniform(0, params["think"] * 2) for _ in range(n)]
    for client in clients:
        await client.ask(op="pool", spec=spec)
    ttfts: list[float] = []
    where: list[list[str]] = [[] for _ in range(n)]
    errors: list[str] = []
    ids = iter(range(10**9))

    async def conversation(k: int) -> None:
        await asyncio.sleep(starts[k])
        history = [{"role": "system", "content": contexts[k]}]
        for turn in range(turns):
            history.append({"role": "user", "content": questions[k][turn]})
            reply = await clients[workers[k][turn]].chat(next(ids), list(history))
            if "error" in reply:
                errors.append(reply["error"])
                return
            ttfts.append(reply["ttft"])
            where[k].append(reply["instance"])
            history.append({"role": "assistant", "content": reply["content"]})
            await asyncio.sleep(params["think"])

    await asyncio.wait_for(asyncio.gather(*(conversation(k) for k in range(n))), params["timeout"])
    for client in clients:
        await client.ask(op="close")
    follow = [(a == b) for w in where for a, b in itertools.pairwise(w)]
    moved = [workers[k][t] != workers[k][t - 1] for k in range(n) for t in range(1, len(where[k]))]
    across = [f for f, m in zip(follow, moved, strict=True) if m]
    within = [f for f, m in zip(follow, moved, strict=True) if not m]
    return {
        "ttft": latency_summary(ttfts) if ttfts else None,
        "stayed": sum(follow) / len(follow) if follow else None,
        # the same, for turns sent by another process than the turn before, and by the same one
        "stayed_across": sum(across) / len(across) if across else None,
        "stayed_within": sum(within) / len(within) if within else None,
        "turns_on_another_process": sum(moved) / len(moved) if moved else None,
        "errors": errors[:5],
        "calls": len(ttfts),
    }


def _emulator_settings(params: dict[str, Any]) -> dict[str, Any]:
    # A new conversation takes the least recently used slot (OLLAMA_MULTIUSER_CACHE=1), so a
    # server keeps up to num_parallel conversations warm and the routing decides the hits
    # (with the default, every unrelated prompt takes the first free slot: about one).
    return {**promptcache._emulator_settings(params), "multiuser_cache": True}


def _hit_rate(procs: list[Any]) -> float | None:
    prompt = cached = 0
    for proc in procs:
        for record in proc.requests():
            if record.get("path") == "/api/chat" and record.get("prompt_eval_count"):
                prompt += record["prompt_eval_count"]
                cached += record.get("cached_tokens") or 0
    return cached / prompt if prompt else None


async def _all_runs(
    params: dict[str, Any], procs: list[Any], redis_url: str
) -> dict[str, list[dict[str, Any]]]:
    instances = [
        {"id": f"i{k}", "url": p.url, "max_concurrent": params["slots"]} for k, p in enumerate(procs)
    ]
    lb = {"strategy": "cache_aware", "queue_timeout": params["timeout"]}
    clients = list(await asyncio.gather(*(_Process.start() for _ in range(params["processes"]))))
    per: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        for run_index in range(params["runs"]):
            for mode in MODES if run_index % 2 == 0 else MODES[::-1]:
                for proc in procs:  # every run starts from empty caches and logs
                    proc.clear_prompt_caches()
                    proc.clear_log()
                spec: dict[str, Any] = {"instances": instances, "load_balancing": lb}
                if mode == "shared":
                    spec["shared_state"] = {"url": redis_url, "namespace": f"bench-prefix-{run_index}"}
                got = await _one_run(params, clients, spec, seed=9100 + run_index)
                got["hit_rate"] = _hit_rate(procs)
                per[mode].append(got)
                ttft = got["ttft"] or {}
                p50, p99 = ttft.get("p50_ms", float("nan")), ttft.get("p99_ms", float("nan"))
                log(
                    f"prefixshare run {run_index + 1}/{params['runs']} {mode}: hit rate {got['hit_rate']}, "
                    f"TTFT p50 {p50:.0f} ms p99 {p99:.0f} ms, stayed {got['stayed']} (across processes "
                    f"{got['stayed_across']}, within {got['stayed_within']}), "
                    f"errors {len(got['errors'])}"
                )
    finally:
        await asyncio.gather(*(client.quit() for client in clients))
    return per


def run(params: dict[str, Any]) -> dict[str, Any]:
    from gleitzeit_llm.testing.redis_server import RedisServer

    with RedisServer() as redis_server, emulators(params["instances"], **_emulator_settings(params)) as procs:
        per = asyncio.run(_all_runs(params, procs, redis_server.url))
    out: dict[str, Any] = {"params": params, "by_mode": {}}
    for mode, runs in per.items():
        ok = [r for r in runs if r["ttft"]]
        out["by_mode"][mode] = {
            "hit_rate": spread([r["hit_rate"] for r in ok if r["hit_rate"] is not None]),
            "ttft_p50_ms": spread([r["ttft"]["p50_ms"] for r in ok]),
            "ttft_p99_ms": spread([r["ttft"]["p99_ms"] for r in ok]),
            "stayed": spread([r["stayed"] for r in ok if r["stayed"] is not None]),
            "stayed_across": spread([r["stayed_across"] for r in ok if r["stayed_across"] is not None]),
            "stayed_within": spread([r["stayed_within"] for r in ok if r["stayed_within"] is not None]),
            "turns_on_another_process": spread([r["turns_on_another_process"] for r in ok]),
            "calls": sum(r["calls"] for r in runs),
            "errors": sorted({e for r in runs for e in r["errors"]})[:5],
        }
    pairs = list(zip(per["shared"], per["local"], strict=True))
    out["ttft_p50_ratio"] = spread(
        [s["ttft"]["p50_ms"] / loc["ttft"]["p50_ms"] for s, loc in pairs if s["ttft"] and loc["ttft"]]
    )
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["client"]:
        asyncio.run(_client())
