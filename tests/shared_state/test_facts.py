"""Learned facts shared through Redis, between two store-less "processes" (two sets of handles)
against a real redis-server: latency, residency, 404s per spelling, busy windows, health."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import redis

from gleitzeit_llm.config import InstanceConfig
from gleitzeit_llm.ollama.names import model_key, spelling_key
from gleitzeit_llm.routing.breaker import CircuitBreaker
from gleitzeit_llm.routing.ewma import PeakEwma
from gleitzeit_llm.routing.health import ProbeResult
from gleitzeit_llm.routing.instance import OllamaInstance
from gleitzeit_llm.routing.strategies import SCORERS, RouteRequest
from gleitzeit_llm.routing.transitions import InstanceState
from gleitzeit_llm.state.redis.facts import LatencyView, SharedFacts, _Own, merge_latency
from gleitzeit_llm.testing.redis_server import RedisServer

from .facts_support import PREFIX, FactsProcess, busy, failure, missing, success


@pytest.fixture
def wall() -> list[float]:
    return [1_000_000.0]


@pytest.fixture
def procs(redis_server: RedisServer, wall: list[float]) -> Iterator[tuple[FactsProcess, FactsProcess]]:
    # Different monotonic origins: only wall-clock times may cross between processes.
    one = FactsProcess(redis_server.url, "host-1:11:aa", origin=50.0, wall=wall)
    two = FactsProcess(redis_server.url, "host-2:22:bb", origin=9_000.0, wall=wall)
    yield one, two
    one.close()
    two.close()


def ok_probe(instance_id: str, loaded: dict[str, float] | None = None) -> ProbeResult:
    return ProbeResult(
        instance_id,
        ok=True,
        latency=0.01,
        version="0.12.0",
        installed=frozenset({"llama3.2:latest", "qwen3:latest"}),
        loaded=loaded or {},
    )


def failed_probe(instance_id: str) -> ProbeResult:
    return ProbeResult(instance_id, ok=False, latency=0.01, error="connection refused")


# -- the latency merge, without Redis --------------------------------------------------------


def test_one_processes_view_merges_to_its_own_decayed_estimate() -> None:
    ewma = PeakEwma()
    ewma.observe(0.4, 100.0)
    view = LatencyView(0.4, 100.0, None, 0.0, 1.0)
    assert merge_latency([view], 103.0, 10.0) == (pytest.approx(ewma.value_at(103.0)), None)


def test_the_merge_weights_processes_by_their_recent_samples() -> None:
    busy_one = LatencyView(0.2, 100.0, None, 0.0, 30.0)  # 30 recent samples
    quiet_one = LatencyView(0.5, 99.0, None, 0.0, 1.0)  # one, a second older
    ttft, _ = merge_latency([busy_one, quiet_one], 100.0, 10.0)
    # (30 * 0.2 + e^-0.1 * 0.5 e^-0.1) / (30 + e^-0.1): close to the busy process's view
    assert 0.2 < ttft < 0.22


def test_a_peak_one_process_just_saw_reaches_the_merge_whole() -> None:
    others = [LatencyView(0.1, 99.0, 0.01, 99.0, 50.0) for _ in range(3)]
    slowed = LatencyView(4.0, 100.0, 0.01, 99.0, 1.0)  # the newest sample: the instance slowed
    ttft, tpot = merge_latency([*others, slowed], 100.0, 10.0)
    assert ttft == pytest.approx(4.0)  # not averaged away by 150 older, faster samples
    assert tpot == pytest.approx(0.01 * math.exp(-0.1))


def test_fast_samples_after_a_peak_pull_the_merge_down() -> None:
    peaked = LatencyView(4.0, 99.0, None, 0.0, 1.0)
    after = LatencyView(0.1, 100.0, None, 0.0, 40.0)  # the newest: 40 fast samples since
    ttft, _ = merge_latency([peaked, after], 100.0, 10.0)
    assert 0.1 < ttft < 0.25


def test_nobody_has_a_sample_nothing_is_merged() -> None:
    assert merge_latency([], 100.0, 10.0) == (None, None)


def test_a_processes_own_estimates_follow_the_local_rule_exactly() -> None:
    inst = OllamaInstance(InstanceConfig(id="a", url="http://127.0.0.1:1"), CircuitBreaker())
    own = _Own(inst.metrics.ttft.decay, inst.metrics.ttft.min_weight)
    observations = [
        (0.0, success(ttft=0.3, duration=1.0, tokens=20)),
        (1.0, success(ttft=0.1, duration=0.5, tokens=20, eval_duration=0.2)),
        (1.5, failure(duration=0.05)),
        (4.0, success(ttft=0.2, duration=0.3, tokens=1)),
        (9.0, success(ttft=0.15, duration=0.9, tokens=None)),
    ]
    for now, obs in observations:
        inst.record_outcome(obs, now, 60.0)
        own.learn(obs, now)
        assert own.ttft.estimate == pytest.approx(inst.metrics.ttft.estimate)
        assert own.tpot.estimate == pytest.approx(inst.metrics.tpot.estimate)


# -- between two processes, through Redis ----------------------------------------------------


def test_latency_learned_in_one_process_routes_the_other(procs: tuple[FactsProcess, FactsProcess]) -> None:
    one, two = procs
    for _ in range(3):
        one.finish("a", success(ttft=2.0, duration=2.5, tokens=10))
        one.finish("b", success(ttft=0.05, duration=0.1, tokens=10))
    assert two.by_id["a"].metrics.ttft.estimate is None  # two never called either
    two.refresh()
    a, b = two.by_id["a"], two.by_id["b"]
    assert a.metrics.ttft.value_at(two.now) == pytest.approx(one.by_id["a"].metrics.ttft.value_at(one.now))
    assert b.metrics.ttft.value_at(two.now) == pytest.approx(0.05)
    scores = SCORERS["latency_based"](two.instances, RouteRequest(strategy="latency_based"), two.now, 128.0)
    assert scores[1] < scores[0]  # latency_based now avoids the slow one it never called


def test_both_processes_observations_merge_into_one_estimate(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    one, two = procs
    for _ in range(9):
        one.finish("a", success(ttft=0.2, duration=0.3))
    wall[0] += 0.01
    two.finish("a", success(ttft=0.4, duration=0.5))
    one.refresh()
    two.refresh()
    est_one = one.by_id["a"].metrics.ttft.value_at(one.now)
    est_two = two.by_id["a"].metrics.ttft.value_at(two.now)
    assert est_one == pytest.approx(est_two)  # one estimate, whichever process reads it
    assert est_one == pytest.approx(0.4)  # two's sample is the newest: its peak counts whole
    wall[0] += 0.1  # (a process writes its estimate at most every 50 ms, unless it peaked)
    for _ in range(5):
        one.finish("a", success(ttft=0.2, duration=0.3))  # then one's fast samples pull it down
    two.refresh()
    assert 0.2 < two.by_id["a"].metrics.ttft.value_at(two.now) < 0.3


def test_a_process_writes_its_estimate_at_most_every_50_ms_unless_it_peaked(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    one, two = procs
    one.finish("a", success(ttft=0.2, duration=0.3))
    wall[0] += 0.01
    one.finish("a", success(ttft=0.1, duration=0.2))  # lower, 10 ms later: not written
    two.refresh()
    assert two.by_id["a"].metrics.ttft.value_at(two.now) == pytest.approx(0.2, rel=0.01)
    wall[0] += 0.01
    one.finish("a", success(ttft=0.9, duration=1.0))  # a peak: written at once
    two.refresh()
    assert two.by_id["a"].metrics.ttft.value_at(two.now) == pytest.approx(0.9)
    wall[0] += 0.05
    one.finish("a", success(ttft=0.1, duration=0.2))  # 50 ms on: written
    two.refresh()
    assert two.by_id["a"].metrics.ttft.value_at(two.now) < 0.9


def test_a_process_gone_quiet_no_longer_counts_and_its_entry_is_deleted(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    one, two = procs
    one.finish("a", success(ttft=3.0, duration=3.5))
    wall[0] += 61.0  # past six decay constants
    two.finish("a", success(ttft=0.1, duration=0.2))
    two.refresh()
    assert two.by_id["a"].metrics.ttft.value_at(two.now) == pytest.approx(0.1)
    two.refresh()  # the clean-up rides on the next read
    fields = two.redis.hkeys(two.facts.key("a"))
    assert sorted(f.decode() for f in fields if f.startswith(b"l:")) == ["l:host-2:22:bb"]


def test_a_404_learned_in_one_process_spares_the_other_for_that_spelling_only(
    procs: tuple[FactsProcess, FactsProcess],
) -> None:
    one, two = procs
    one.finish("a", missing("Llama3.2"))
    learned = two.refresh()
    a = two.by_id["a"]
    assert learned["a"].model_missing and learned["a"].filters_changed
    assert not a.may_serve(model_key("Llama3.2"), spelling_key("Llama3.2"))
    assert a.may_serve(model_key("llama3.2"), spelling_key("llama3.2"))  # another spelling may resolve
    assert "b" not in learned
    assert two.refresh() == {}  # learned once


def test_a_spelling_that_answers_somewhere_is_unmarked_everywhere(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    one, two = procs
    one.finish("a", missing("Llama3.2"))
    two.refresh()
    two.finish("a", success("Llama3.2"))  # it answered (pulled since): two un-marks it ...
    assert one.refresh() == {}  # (a write of one's own may still be in flight: kept a moment)
    wall[0] += 3.0
    learned = one.refresh()
    assert learned["a"].filters_changed  # ... and so does one
    assert one.by_id["a"].may_serve(model_key("Llama3.2"), spelling_key("Llama3.2"))


def test_a_retry_after_from_one_process_keeps_every_process_away_until_the_same_wall_time(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    one, two = procs
    one.finish("a", busy(retry_after=30))
    wall[0] += 2.0  # two reads two seconds later, on a monotonic clock with another origin
    learned = two.refresh()
    a = two.by_id["a"]
    assert learned["a"].busy_until == a.busy_until
    assert a.busy_until - two.now == pytest.approx(28.0)
    assert "Retry-After 30s" in a.unavailable_reason(two.now)
    assert two.refresh() == {}  # applied once, not again at every refresh
    assert one.refresh() == {}  # its own window, not applied twice


def test_an_expired_busy_window_is_ignored_and_deleted(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    one, two = procs
    one.finish("a", busy(retry_after=None))  # 1 s back-off
    wall[0] += 1.5
    assert two.refresh() == {}
    assert two.by_id["a"].busy_until == 0.0
    two.refresh()
    assert not two.redis.hexists(two.facts.key("a"), "b")


def test_residency_from_calls_reaches_the_other_process(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    one, two = procs
    one.finish("a", success("llama3.2"))  # default keep_alive: 300 s
    one.finish("b", success("qwen3", keep_alive=-1))  # kept loaded
    wall[0] += 10.0
    two.refresh()
    assert two.by_id["a"].loaded_models[model_key("llama3.2")] - two.now == pytest.approx(290.0)
    assert two.by_id["b"].loaded_models[model_key("qwen3")] == math.inf
    one.finish("a", success("llama3.2", keep_alive=0))  # unloaded after the call
    two.refresh()
    assert not two.by_id["a"].is_loaded(model_key("llama3.2"), two.now)


def test_a_later_probe_round_supersedes_residency_learned_before_it(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    one, two = procs
    one.finish("a", success("llama3.2"))
    wall[0] += 1.0
    one.probe("a", ok_probe("a", loaded={"qwen3:latest": 100.0}))  # /api/ps: llama3.2 was evicted
    two.refresh()
    assert set(two.by_id["a"].loaded_models) == {"qwen3:latest"}
    two.refresh()
    assert not two.redis.hexists(two.facts.key("a"), "r:llama3.2:latest")  # superseded, deleted
    wall[0] += 1.0
    one.finish("a", success("llama3.2"))  # served again after the round: resident again
    two.refresh()
    assert two.by_id["a"].is_loaded("llama3.2:latest", two.now)


def test_the_probers_health_checks_move_every_process_through_the_same_rules(
    procs: tuple[FactsProcess, FactsProcess], wall: list[float]
) -> None:
    leader, follower = procs
    a = follower.by_id["a"]
    leader.probe("a", ok_probe("a", loaded={"llama3.2:latest": 60.0}))
    learned = follower.refresh()
    assert a.state is InstanceState.HEALTHY
    assert [c[1:3] for c in learned["a"].changes] == [("unknown", "healthy")]
    assert a.version == "0.12.0" and a.installed_models == {"llama3.2:latest", "qwen3:latest"}
    assert a.loaded_models["llama3.2:latest"] - follower.now == pytest.approx(60.0)
    assert follower.refresh() == {}  # one round is applied once
    states = []
    for _ in range(3):
        wall[0] += 1.0
        leader.probe("a", failed_probe("a"))
        follower.refresh()
        states.append((leader.by_id["a"].state, a.state))
    assert [s for s, t in states] == [t for s, t in states]  # agreement after every round
    assert states[-1][1] is InstanceState.UNHEALTHY
    assert a.consecutive_probe_failures == leader.by_id["a"].consecutive_probe_failures
    wall[0] += 1.0
    leader.probe("a", ok_probe("a"))
    follower.refresh()
    assert a.state is leader.by_id["a"].state is InstanceState.DEGRADED


def _failed_in_the_follower(
    procs: tuple[FactsProcess, FactsProcess], failures: int
) -> tuple[FactsProcess, FactsProcess, OllamaInstance]:
    """Both agree on a healthy "a" after a probe round; then the follower alone sees failures."""
    leader, follower = procs
    leader.probe("a", ok_probe("a"))
    follower.refresh()
    for _ in range(failures):
        follower.finish("a", failure())
    return leader, follower, follower.by_id["a"]


def test_a_follower_its_own_requests_degraded_recovers_by_the_probers_counts(
    procs: tuple[FactsProcess, FactsProcess],
) -> None:
    leader, follower, a = _failed_in_the_follower(procs, 2)
    assert a.state is InstanceState.DEGRADED  # two failed requests in a row, here only
    leader.probe("a", ok_probe("a"))
    learned = follower.refresh()
    # The prober has passed twice in a row: with its count, the rule itself brings a back.
    assert a.state is InstanceState.HEALTHY is leader.by_id["a"].state
    assert learned["a"].changes[-1].reason == "health checks pass"


def test_a_follower_the_rules_leave_elsewhere_takes_the_probers_verdict(
    procs: tuple[FactsProcess, FactsProcess],
) -> None:
    leader, follower, a = _failed_in_the_follower(procs, 5)  # its own breaker opened, here only
    assert a.state is InstanceState.UNHEALTHY
    leader.probe("a", ok_probe("a"))
    learned = follower.refresh()
    # The rule alone would say degraded (back, but less preferred); the prober says healthy.
    assert [c[1:3] for c in learned["a"].changes] == [("unhealthy", "degraded"), ("degraded", "healthy")]
    assert a.state is InstanceState.HEALTHY is leader.by_id["a"].state
    assert learned["a"].changes[-1].reason == "the pool's health check found it healthy"


def test_a_process_never_reapplies_its_own_probe_round(procs: tuple[FactsProcess, FactsProcess]) -> None:
    leader, _ = procs
    leader.probe("a", ok_probe("a"))
    probes = leader.by_id["a"].metrics.probes
    assert leader.refresh() == {}
    assert leader.by_id["a"].metrics.probes == probes


def test_every_key_is_inside_the_pools_hash_tag_and_expires(procs: tuple[FactsProcess, FactsProcess]) -> None:
    one, _ = procs
    one.finish("a", success())
    one.finish("b", busy(retry_after=5))
    one.probe("a", ok_probe("a"))
    keys = sorted(k.decode() for k in one.redis.keys("*"))
    assert keys == [f"{PREFIX}:a", f"{PREFIX}:b"]
    for key in keys:
        assert 0 < one.redis.pttl(key) <= 3600 * 1000


def test_a_garbled_field_from_another_version_is_skipped(procs: tuple[FactsProcess, FactsProcess]) -> None:
    one, two = procs
    one.finish("a", success(ttft=0.3, duration=0.4))
    key = two.facts.key("a")
    two.redis.hset(key, mapping={"l:other": "nonsense", "m:x": "soon", "b": "x y", "p": "{", "r:y": "1"})
    two.refresh()
    assert two.by_id["a"].metrics.ttft.value_at(two.now) == pytest.approx(0.3)


def test_a_failed_read_leaves_the_handles_as_they_were() -> None:
    facts = SharedFacts(PREFIX, "t")
    inst = OllamaInstance(InstanceConfig(id="a", url="http://127.0.0.1:1"), CircuitBreaker())
    assert facts.apply([redis.ConnectionError("down")], [inst], 0.0, 1.0) == {}
    assert inst.metrics.ttft.estimate is None
