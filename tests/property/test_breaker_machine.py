"""The circuit breaker as a state machine: hypothesis drives random sequences of calls and
checks that no transition the design forbids ever happens."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gleitzeit_llm.routing.breaker import CircuitBreaker, CircuitState

ALLOWED = {
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
    ("open", "closed"),  # only through reset()
}


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.transitions: list[tuple[str, str, str]] = []
        self.breaker = CircuitBreaker(
            failure_threshold=3,
            recovery_timeout=10.0,
            half_open_requests=2,
            max_recovery_timeout=40.0,
            clock=lambda: self.now,
            on_change=lambda old, new, reason: self.transitions.append((old.value, new.value, reason)),
        )
        self.admitted_probes = 0  # probes admitted and not yet answered

    @rule()
    def acquire(self) -> None:
        state_before = self.breaker.state_at(self.now)
        admitted = self.breaker.try_acquire(self.now)
        if state_before is CircuitState.OPEN:
            assert not admitted
        if admitted and self.breaker._state is CircuitState.HALF_OPEN:
            self.admitted_probes += 1

    @rule()
    def success(self) -> None:
        was_half_open = self.breaker._state is CircuitState.HALF_OPEN
        self.breaker.record_success(self.now)
        if was_half_open:
            assert self.breaker._state is CircuitState.CLOSED
        self.admitted_probes = (
            0 if self.breaker._state is CircuitState.CLOSED else max(0, self.admitted_probes - 1)
        )

    @rule()
    def failure(self) -> None:
        before = self.breaker._state
        failures_before = self.breaker.consecutive_failures
        self.breaker.record_failure(self.now)
        if before is CircuitState.HALF_OPEN:
            assert self.breaker._state is CircuitState.OPEN
        if before is CircuitState.CLOSED and failures_before + 1 >= 3:
            assert self.breaker._state is CircuitState.OPEN
        if self.breaker._state is CircuitState.OPEN:
            self.admitted_probes = 0

    @precondition(lambda self: self.admitted_probes > 0)
    @rule()
    def release(self) -> None:
        self.breaker.release()
        self.admitted_probes -= 1

    @rule(seconds=st.floats(min_value=0.0, max_value=60.0))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def read_status(self) -> None:
        count = len(self.transitions)
        self.breaker.state_at(self.now)
        self.breaker.allows(self.now)
        repr(self.breaker)
        assert len(self.transitions) == count  # reading never transitions

    @invariant()
    def only_allowed_transitions(self) -> None:
        for old, new, reason in self.transitions:
            assert (old, new) in ALLOWED, (old, new, reason)
            if (old, new) == ("open", "closed"):
                assert reason == "reset"

    @invariant()
    def half_open_never_admits_more_than_its_limit(self) -> None:
        assert self.breaker._probes_in_flight <= self.breaker.half_open_requests

    @invariant()
    def open_time_stays_within_bounds(self) -> None:
        assert 10.0 <= self.breaker.open_for <= 40.0


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase
