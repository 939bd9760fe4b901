"""The circuit breaker as the design describes it, driven by a fake clock."""

from __future__ import annotations

import pytest

from gleitzeit_llm.routing.breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kwargs: float) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        **{"failure_threshold": 3, "recovery_timeout": 10.0, "half_open_requests": 2, **kwargs},  # type: ignore[arg-type]
        clock=clock,
        on_change=lambda old, new, reason: changes.append((old.value, new.value)),
    )
    return breaker, changes


def test_opens_after_threshold_consecutive_failures(clock: Clock) -> None:
    breaker, changes = make(clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.try_acquire()
    assert changes == [("closed", "open")]


def test_a_success_resets_the_consecutive_count(clock: Clock) -> None:
    breaker, _ = make(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED


def test_reading_state_never_transitions(clock: Clock) -> None:
    breaker, changes = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 11
    assert breaker.state is CircuitState.HALF_OPEN  # as read
    assert breaker.allows()
    assert changes == [("closed", "open")]  # nothing recorded by reading


def test_half_open_admits_at_most_the_limit(clock: Clock) -> None:
    breaker, changes = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.try_acquire()
    assert breaker.try_acquire()
    assert not breaker.try_acquire()
    assert not breaker.allows()
    breaker.release()  # a probe that ended without a verdict frees its place
    assert breaker.try_acquire()
    assert changes == [("closed", "open"), ("open", "half_open")]


def test_half_open_success_closes(clock: Clock) -> None:
    breaker, changes = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert changes[-1] == ("half_open", "closed")


def test_half_open_failure_reopens_for_longer_capped(clock: Clock) -> None:
    breaker, _ = make(clock, max_recovery_timeout=25.0)
    for _ in range(3):
        breaker.record_failure()
    assert breaker.open_for == 10
    clock.now += 10
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.open_for == 20
    clock.now += 19.9
    assert not breaker.try_acquire()
    clock.now += 0.1
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.open_for == 25  # capped


def test_flapping_after_recovery_keeps_growing(clock: Clock) -> None:
    breaker, _ = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    breaker.try_acquire()
    breaker.record_success()
    for _ in range(3):
        breaker.record_failure()  # right after recovering
    assert breaker.open_for == 20


def test_a_long_healthy_spell_forgives(clock: Clock) -> None:
    breaker, _ = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    breaker.try_acquire()
    breaker.record_success()
    clock.now += 3600
    for _ in range(3):
        breaker.record_failure()
    assert breaker.open_for == 10


def test_reset_closes_and_forgets(clock: Clock) -> None:
    breaker, _ = make(clock)
    for _ in range(3):
        breaker.record_failure()
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.try_acquire()


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"half_open_requests": 0}])
def test_rejects_impossible_limits(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_adopt_takes_a_state_decided_elsewhere(clock: Clock) -> None:
    breaker, changes = make(clock)
    moved = breaker.adopt(CircuitState.OPEN, clock.now, retry_in=4.0, open_for=20.0, reason="elsewhere")
    assert moved == (CircuitState.CLOSED, CircuitState.OPEN, "elsewhere")
    assert breaker.retry_at() == clock.now + 4.0
    assert breaker.open_for == 20.0
    assert not breaker.allows(clock.now)
    clock.now += 4.0
    assert breaker.state_at(clock.now) is CircuitState.HALF_OPEN  # due when the other process said

    breaker.adopt(CircuitState.HALF_OPEN, clock.now, probe=True)  # a probe admitted pool-wide
    assert breaker.record_success(clock.now) == (
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
        "probe succeeded",
    )
    assert breaker.adopt(CircuitState.CLOSED, clock.now) is None  # already there: no change
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
