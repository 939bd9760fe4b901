"""The health state machine as a table: every row of routing/transitions.py, and what stays put."""

from __future__ import annotations

import pytest

from gleitzeit_llm.routing.transitions import HEALTH_TABLE, Facts, InstanceState, Signal, next_state

H, D, U, K = InstanceState.HEALTHY, InstanceState.DEGRADED, InstanceState.UNHEALTHY, InstanceState.UNKNOWN
P_OK, P_FAIL = Signal.PROBE_PASSED, Signal.PROBE_FAILED
SERVED, FAILED, OPENED = Signal.SERVED, Signal.FAILED, Signal.BREAKER_OPENED

ROWS = [
    # state, signal, facts, expected (None: stays)
    (K, P_OK, Facts(probe_passes=1), (H, "health check passed")),
    (D, P_OK, Facts(probe_passes=2, breaker_closed=True), (H, "health checks pass")),
    (D, P_OK, Facts(probe_passes=1, breaker_closed=True), None),  # one pass proves nothing yet
    (D, P_OK, Facts(probe_passes=5, breaker_closed=False), None),  # the breaker decides first
    (U, P_OK, Facts(probe_passes=1), (D, "health check answered again")),  # hysteresis
    (H, P_OK, Facts(probe_passes=1), None),
    (K, P_FAIL, Facts(probe_failures=1, detail="refused"), (U, "health check failed: refused")),
    (H, P_FAIL, Facts(probe_failures=1, detail="refused"), (D, "health check failed: refused")),
    (H, P_FAIL, Facts(probe_failures=2, detail="refused"), (U, "health check failed: refused")),
    (D, P_FAIL, Facts(probe_failures=1, detail="refused"), None),
    (D, P_FAIL, Facts(probe_failures=2, detail="refused"), (U, "health check failed: refused")),
    (U, P_FAIL, Facts(probe_failures=9, detail="refused"), None),
    (K, SERVED, Facts(), (H, "served a request")),
    (D, SERVED, Facts(probe_request=True), (H, "probe request succeeded")),
    (D, SERVED, Facts(probe_request=False), None),  # ordinary traffic does not heal a degraded box
    (H, SERVED, Facts(), None),
    (U, SERVED, Facts(), None),
    (H, FAILED, Facts(failures=1), None),
    (H, FAILED, Facts(failures=2), (D, "2 failures in a row")),
    (D, FAILED, Facts(failures=7), None),
    (K, FAILED, Facts(failures=7), None),
    (U, FAILED, Facts(failures=7), None),
    (H, OPENED, Facts(detail="5 in a row"), (U, "circuit breaker opened: 5 in a row")),
    (D, OPENED, Facts(detail="probe failed"), (U, "circuit breaker opened: probe failed")),
    (K, OPENED, Facts(detail="x"), (U, "circuit breaker opened: x")),
    (U, OPENED, Facts(detail="x"), None),
]


@pytest.mark.parametrize(("state", "signal", "facts", "expected"), ROWS)
def test_each_row_of_the_health_table(
    state: InstanceState, signal: Signal, facts: Facts, expected: tuple[InstanceState, str] | None
) -> None:
    assert next_state(state, signal, facts) == expected


def test_the_rows_above_cover_every_signal_and_state() -> None:
    covered = {(state, signal) for state, signal, _, _ in ROWS}
    assert covered == {(state, signal) for state in InstanceState for signal in Signal}
    assert {(state, signal) for signal, state in HEALTH_TABLE} <= covered


def test_the_table_never_moves_a_state_to_itself() -> None:
    for (_, state), rules in HEALTH_TABLE.items():
        assert all(rule.to is not state for rule in rules)
