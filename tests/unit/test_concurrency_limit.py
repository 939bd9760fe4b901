"""The learned concurrency limit of one (instance, model): the rules, and a simulated server.

The simulation is a server with ``num_parallel`` slots and a FIFO queue behind them (as Ollama's
runner), fed by a sender that always has more work than the limit allows: what a busy pool does
to one instance. Service times vary by a seeded +-30%.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from gleitzeit_llm.routing.concurrency import (
    FIRST_PROBE_WINDOWS,
    MAX_PROBE_WINDOWS,
    ConcurrencyLimit,
    ModelLimits,
    server_times,
)


@dataclass
class Run:
    limits: list[int] = field(default_factory=list)  # the limit after each answer
    queued: list[bool] = field(default_factory=list)  # whether each answer waited in the server


def simulate(
    lim: ConcurrencyLimit, num_parallel: int, answers: int, seed: int = 1, service: float = 1.0
) -> Run:
    """Answers ``answers`` requests on a simulated server; the sender keeps ``lim.limit`` in flight."""
    rng = random.Random(seed)
    now = 0.0
    waiting: list[tuple[float, int]] = []  # (arrival, in flight then) queued in the server (FIFO)
    busy: list[tuple[float, int, float, int, float]] = []  # (done at, seq, arrival, in flight, service)
    in_flight = 0
    seq = 0
    run = Run()

    def send() -> None:
        nonlocal in_flight
        while in_flight < lim.limit:
            in_flight += 1
            waiting.append((now, in_flight))
            start_next()

    def start_next() -> None:
        nonlocal seq
        while waiting and len(busy) < num_parallel:
            arrival, sent_with = waiting.pop(0)
            took = service * rng.uniform(0.7, 1.3)
            seq += 1
            heapq.heappush(busy, (now + took, seq, arrival, sent_with, took))

    send()
    while len(run.limits) < answers:
        done, _, arrival, sent_with, took = heapq.heappop(busy)
        now = done
        queue = done - arrival - took
        lim.observe(queue, took, sent_with, arrival, now)
        in_flight -= 1
        run.limits.append(lim.limit)
        run.queued.append(queue > 0.01)
        start_next()
        send()
    return run


# -- the rules, one answer at a time -------------------------------------------------------------

_clock = itertools.count(1)


def answer(
    lim: ConcurrencyLimit, queue: float = 0.0, service: float = 1.0, in_flight: int = 1, *, old: bool = False
) -> bool:
    """One answer, sent after every change so far (``old``: sent before all of them)."""
    now = float(next(_clock))
    return lim.observe(queue, service, in_flight, -1.0 if old else now - 0.5, now)


def test_starts_at_max_concurrent_so_nothing_changes_until_a_server_queues():
    assert ConcurrencyLimit(8).limit == 8
    assert ConcurrencyLimit(8, initial=3).limit == 3
    assert ConcurrencyLimit(0).limit == 1  # bounds hold whatever it is given


def test_a_queued_answer_lowers_the_limit_by_the_share_of_time_the_server_worked():
    lim = ConcurrencyLimit(8)
    # waited one service time behind the others: twice what the server runs was in flight
    answer(lim, queue=1.0, service=1.0, in_flight=8)
    assert lim.limit == 4
    assert lim.ceiling == 8 and lim.decreases == 1


def test_a_decrease_is_at_least_one_and_never_below_one():
    lim = ConcurrencyLimit(4)
    answer(lim, queue=0.06, service=1.0, in_flight=4)  # a short wait: 4 x 0.94 rounds to 4
    assert lim.limit == 3
    lim = ConcurrencyLimit(4)
    answer(lim, queue=100.0, service=1.0, in_flight=4)
    assert lim.limit == 1
    answer(lim, queue=100.0, service=1.0, in_flight=1)
    assert lim.limit == 1


def test_noise_below_the_floor_is_not_queueing():
    lim = ConcurrencyLimit(4)
    answer(lim, queue=0.006, service=0.05, in_flight=4)  # Ollama's few ms of bookkeeping
    answer(lim, queue=0.2, service=5.0, in_flight=4)  # 4% of a long generation
    assert lim.limit == 4 and lim.decreases == 0


def test_answers_sent_before_a_change_are_not_counted():
    lim = ConcurrencyLimit(8)
    answer(lim, queue=1.0, service=1.0, in_flight=8)
    assert lim.limit == 4
    for _ in range(7):  # the other seven sent under the old limit, queued just as long
        answer(lim, queue=3.0, service=1.0, in_flight=7, old=True)
    assert lim.limit == 4 and lim.decreases == 1
    answer(lim, queue=3.0, service=1.0, in_flight=4)  # sent under the new limit: counts
    assert lim.limit == 1


def test_a_window_of_answers_without_queueing_at_the_limit_raises_it_by_one():
    lim = ConcurrencyLimit(8, initial=3)
    assert [answer(lim, in_flight=3) for _ in range(3)] == [False, False, True]
    assert lim.limit == 4 and lim.increases == 1
    assert not answer(lim, in_flight=4, old=True)  # sent at 3: says nothing about 4
    assert [answer(lim, in_flight=4) for _ in range(4)] == [False, False, False, True]


def test_a_limit_not_in_use_does_not_grow():
    lim = ConcurrencyLimit(8, initial=3)
    for _ in range(100):
        answer(lim, in_flight=2)
    assert lim.limit == 3


def test_it_never_grows_past_max_concurrent():
    lim = ConcurrencyLimit(3)
    for _ in range(100):
        answer(lim, in_flight=3)
    assert lim.limit == 3 and lim.increases == 0


def test_going_back_to_a_limit_that_queued_waits_longer_each_time_it_queues_again():
    lim = ConcurrencyLimit(4)
    answer(lim, queue=1.0, service=1.0, in_flight=4)  # queued at 4: limit 2, ceiling 4
    assert (lim.limit, lim.ceiling) == (2, 4)
    for _ in range(2):
        answer(lim, in_flight=2)
    assert lim.limit == 3  # below the ceiling: one window
    waits = []
    for _ in range(3):
        answers = 0
        while lim.limit == 3:
            answer(lim, in_flight=3)
            answers += 1
        waits.append(answers)
        assert lim.limit == 4  # the probe
        answer(lim, queue=0.5, service=1.0, in_flight=4)  # queues again
        assert lim.limit == 3
    assert waits == [3 * FIRST_PROBE_WINDOWS, 3 * 2 * FIRST_PROBE_WINDOWS, 3 * 4 * FIRST_PROBE_WINDOWS]


def test_a_probe_that_does_not_queue_forgets_the_ceiling():
    lim = ConcurrencyLimit(8, initial=3)
    lim.ceiling = 4  # once seen queueing at 4; the server has more slots since
    for _ in range(3 * FIRST_PROBE_WINDOWS):
        answer(lim, in_flight=3)
    assert lim.limit == 4
    for _ in range(4):  # a whole window at 4 without queueing
        answer(lim, in_flight=4)
    assert lim.ceiling is None and lim.limit == 5
    for _ in range(5):  # back to one window per step
        answer(lim, in_flight=5)
    assert lim.limit == 6


# -- a simulated server ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_parallel", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_converges_to_the_servers_parallelism_from_max_concurrent(num_parallel: int, seed: int):
    lim = ConcurrencyLimit(8)
    run = simulate(lim, num_parallel, 600, seed)
    settled = run.limits[200:]
    # at its parallelism, apart from rare probes one above it
    assert min(settled) >= num_parallel - 1
    assert sum(1 for x in settled if x == num_parallel) >= 0.9 * len(settled)
    assert max(settled) <= min(num_parallel + 1, 8)
    # the server's own queue stays near zero once learned
    assert sum(run.queued[200:]) <= 0.05 * len(settled)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_server_as_parallel_as_max_concurrent_is_never_limited(seed: int):
    lim = ConcurrencyLimit(8)
    run = simulate(lim, 8, 400, seed)
    assert set(run.limits) == {8} and not any(run.queued)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_oscillation_storm(seed: int):
    lim = ConcurrencyLimit(8)
    simulate(lim, 2, 1000, seed)
    # a few steps down at the start, then rare probes (each one up and one down)
    assert lim.decreases <= 12 and lim.increases <= 12


def test_recovers_when_the_server_gets_more_slots():
    lim = ConcurrencyLimit(8)
    simulate(lim, 1, 300)
    assert lim.limit == 1
    # restarted with OLLAMA_NUM_PARALLEL=4: the probes find it within their (bounded) wait
    run = simulate(lim, 4, 4 * MAX_PROBE_WINDOWS * 2)
    assert run.limits[-1] == 4


def test_follows_a_server_that_loses_slots():
    lim = ConcurrencyLimit(8)
    simulate(lim, 4, 300)
    assert lim.limit == 4
    run = simulate(lim, 1, 200)
    assert run.limits[-1] == 1 and sum(run.queued[100:]) <= 3


# -- per instance, and the queue time from a final chunk ------------------------------------------


def test_model_limits_apply_per_model_once_learned():
    limits = ModelLimits(4)
    assert limits.admits("a", {"a": 10})  # nothing learned: the instance cap alone decides
    limits.observe("a", queue=3.0, service=1.0, in_flight=4, sent_at=0.0, now=4.0)
    assert limits.snapshot() == {"a": 1}
    assert not limits.admits("a", {"a": 1}) and limits.admits("a", {}) and limits.admits("b", {"a": 1})
    assert limits.admits(None, {"a": 4})


def test_queue_and_service_time_from_the_final_chunk():
    final = SimpleNamespace(  # Ollama's docs example: 4 ms of bookkeeping, no queueing
        total_duration=4_883_583_458,
        load_duration=1_334_875,
        prompt_eval_duration=342_546_000,
        eval_duration=4_535_599_000,
    )
    queue, service = server_times(final)  # type: ignore[misc]
    assert queue == pytest.approx(0.004103583) and service == pytest.approx(4.878145)
    # omitted (omitempty) durations count as zero; no total: unknown
    assert server_times(SimpleNamespace(total_duration=2_000_000_000, load_duration=10**9)) == (1.0, 0.0)
    assert server_times(SimpleNamespace(total_duration=None)) is None
    assert server_times(SimpleNamespace(total_duration=5, load_duration=10)) == (0.0, 0.0)
