"""Learned facts and probe leadership across real OS processes: one pool, one Redis, emulators in
the test process counting what really reached them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .facts_support import FactsWorker

MODEL = "llama3.2"


@pytest.fixture
def workers() -> Iterator[Callable[..., list[FactsWorker]]]:
    """``workers(n, spec)``: n worker processes started in parallel, each ready."""
    started: list[FactsWorker] = []

    def make(n: int, spec: dict[str, Any]) -> list[FactsWorker]:
        batch = [FactsWorker(spec) for _ in range(n)]
        started.extend(batch)
        return [w.ready() for w in batch]

    yield make
    for worker in started:
        worker.close()


def _instances(emulators: list[Any], tags: list[list[str]] | None = None) -> list[dict[str, Any]]:
    return [
        {"id": f"e{i}", "url": e.url, "max_concurrent": 4, "tags": tags[i] if tags else []}
        for i, e in enumerate(emulators)
    ]


def test_what_one_process_learns_routes_the_others(
    ollama_emulators: Any, redis_server: Any, workers: Any
) -> None:
    """Latency, a 404, a Retry-After and residency, each learned by the first process alone, keep
    the other two away from (or send them to) the instance concerned. Tags keep each fact's pair
    of instances apart."""
    # Output is instant: the latency estimate is the time to first token alone, and the slow
    # instance stays far slower than a fast one with a scheduling hiccup on a loaded machine.
    fast = {"ttft": 0.005, "time_scale": 1.0, "load_time": 0.05, "tokens_per_second": 0}
    (slow,) = ollama_emulators(1, models=[MODEL], loaded=[MODEL], **{**fast, "ttft": 3.0})
    (quick,) = ollama_emulators(1, models=[MODEL], loaded=[MODEL], **fast)
    (lacking,) = ollama_emulators(1, models=[MODEL], loaded=[MODEL], **fast)
    (having,) = ollama_emulators(1, models=[MODEL, "qwen3"], loaded=[MODEL], **fast)
    busy, free = ollama_emulators(2, models=[MODEL], loaded=[MODEL], **fast)
    loading, other_one = ollama_emulators(2, models=[MODEL, "qwen3"], loaded=[MODEL], **fast)
    busy.set_faults(busy=True, busy_retry_after=30)
    servers = [slow, quick, lacking, having, busy, free, loading, other_one]
    tags = [["lat", "slow"], ["lat"], ["miss", "lacking"], ["miss"], ["busy", "busy-one"], ["busy"]]
    tags += [["res", "res-one"], ["res"]]
    spec = {
        "instances": _instances(servers, tags),
        "shared_state": {"url": redis_server.url},
        "load_balancing": {"strategy": "round_robin", "queue_timeout": 0.5},
    }
    first, *others = workers(3, spec)

    # Latency: only the first process calls the slow instance; latency_based in the others then
    # avoids it at once (without the fact: a coin toss per call between two unmeasured ones).
    # One call of 3 s: decayed over the seconds the others take on a loaded machine, it stays
    # far above a fast instance's estimate, even one that a scheduling stall pushed up (the
    # estimate jumps to a peak; at 1.5 s such a stall once sent a call to the slow one).
    assert first.chat(1, instance_tags=["slow"])["served"] == {"e0": 1}
    for other in others:
        # Counts of other processes' calls reach this one by the refresh (releases are announced
        # only to processes that wait): until then the previous process's last call may still
        # show on e1, and an unmeasured instance with a call in flight is avoided at any cost.
        seen = other.until(
            lambda s: s["instances"]["e0"]["ttft"] is not None and s["instances"]["e1"]["in_flight"] == 0
        )
        assert seen["instances"]["e0"]["ttft"] > 1.0  # 3 s, decayed for the time since
        answer = other.chat(4, instance_tags=["lat"], load_balancing_strategy="latency_based")
        assert answer == {"served": {"e1": 4}, "errors": []}

    # A 404, a Retry-After and a model load, each met by the first process alone.
    missed = first.chat(1, model="qwen3", instance_tags=["lacking"])
    assert missed["served"] == {} and "ModelNotFoundError" in missed["errors"][0]
    refused = first.chat(1, instance_tags=["busy-one"])
    assert refused["served"] == {} and refused["errors"]
    busy.clear_faults()  # it would answer now, but it asked for 30 s
    assert first.chat(1, model="qwen3", instance_tags=["res-one"], keep_alive=-1)["served"] == {"e6": 1}

    for other in others:
        seen = other.until(
            lambda s: (
                s["instances"]["e2"]["missing"] == ["qwen3:latest"]
                and s["instances"]["e4"]["busy_for"] > 0
                and "qwen3:latest" in s["instances"]["e6"]["loaded"]
            )
        )["instances"]
        assert 20 < seen["e4"]["busy_for"] <= 30
        assert seen["e6"]["resident_for"]["qwen3:latest"] is None  # kept loaded (keep_alive -1)
        # the 404 spares the instance that lacks the model; the busy window the busy one
        assert other.chat(4, model="qwen3", instance_tags=["miss"]) == {"served": {"e3": 4}, "errors": []}
        assert other.chat(4, instance_tags=["busy"]) == {"served": {"e5": 4}, "errors": []}
        # model_affinity goes where the first process loaded the model
        answer = other.chat(3, model="qwen3", instance_tags=["res"], load_balancing_strategy="model_affinity")
        assert answer == {"served": {"e6": 3}, "errors": []}
    # What reached the servers, counted by them: only the first process's calls.
    assert len(slow.requests_for("/api/chat")) == 1
    assert len(lacking.requests_for("/api/chat", model="qwen3")) == 1
    assert len(busy.requests_for("/api/chat")) == 1
    assert len(other_one.requests_for("/api/chat")) == 0


def test_health_is_probed_once_per_interval_pool_wide_and_handed_over_when_the_prober_dies(
    ollama_emulators: Any, redis_server: Any, workers: Any
) -> None:
    emulators = ollama_emulators(2, models=[MODEL], loaded=[MODEL])
    interval = 0.2
    spec = {
        "instances": _instances(emulators),
        # A lease long enough that a leader's refresh thread stalled by a loaded machine keeps it.
        "shared_state": {"url": redis_server.url, "lease_ttl": 5.0},
        "load_balancing": {"health_check_interval": interval},
        "health_checks": True,
    }
    procs = workers(3, spec)

    def leaders() -> list[FactsWorker]:
        return [w for w in procs if w.inspect()["leading"]]

    def the_leader(timeout: float = 30.0) -> FactsWorker:
        """The one process that leads (asked until exactly one does: a process believes it leads
        only while its last renewal is fresh, so a stalled one may doubt for a moment)."""
        deadline = time.monotonic() + timeout
        while len(found := leaders()) != 1:
            assert time.monotonic() < deadline, f"{len(found)} leaders"
        return found[0]

    leader = the_leader()
    # Every process knows what the prober learned, through the same rules.
    for worker in procs:
        seen = worker.until(lambda s: all(i["version"] for i in s["instances"].values()))
        assert {i["state"] for i in seen["instances"].values()} == {"healthy"}

    # Over ten rounds: only the leader probed, and each server saw one probe per leader round.
    def probes() -> int:
        return len(emulators[0].requests_for("/api/ps"))

    def rounds() -> list[int]:
        return [w.inspect()["probe_rounds"] for w in procs]

    hits, before = probes(), rounds()
    emulators[0].wait_for(lambda: probes() >= hits + 10, timeout=30)
    after, hits = rounds(), probes() - hits
    done = {w: a - b for w, a, b in zip(procs, after, before, strict=True)}
    assert [done[w] for w in procs if w is not leader] == [0, 0]
    assert hits - 1 <= done[leader] <= hits + 1  # a round in flight at either end
    assert the_leader() is leader  # the same one the whole time: its lease is renewed

    leader.kill()
    procs.remove(leader)
    # A successor takes over within one lease TTL (plus one refresh), and probing goes on from it.
    before, hits = rounds(), probes()
    emulators[0].wait_for(lambda: probes() >= hits + 5, timeout=30)
    successor = the_leader()
    done = {w: a - b for w, a, b in zip(procs, rounds(), before, strict=True)}
    assert done[successor] >= 4 and [done[w] for w in procs if w is not successor] == [0]
