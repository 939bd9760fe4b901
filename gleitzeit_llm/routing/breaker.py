"""Per-instance circuit breaker.

``closed`` -> ``open`` after ``failure_threshold`` consecutive failures -> ``half_open`` once the
open time has passed, admitting at most ``half_open_requests`` probes at a time -> ``closed`` on
the first success, or ``open`` again on a failure with a longer open time (doubled per trip that
follows a recent recovery, capped at ``max_recovery_timeout``).

The breaker is not thread-safe by itself: the owner (:class:`~gleitzeit_llm.routing.instance.OllamaInstance`)
calls it under its pool lock. Reading :meth:`state_at` never changes anything; only
:meth:`try_acquire`, :meth:`release`, :meth:`record_success` and :meth:`record_failure` do.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from gleitzeit_llm.routing.epoch import UNPOOLED, Epoch

__all__ = ["CircuitBreaker", "CircuitState", "Transition"]


class CircuitState(str, enum.Enum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


StateListener = Callable[[CircuitState, CircuitState, str], None]
# (old, new, reason): what a changing call returns when it moved the breaker, else None.
Transition = tuple[CircuitState, CircuitState, str]

# Module constants: looking a member up on an Enum class is slow, and allows() runs for every
# instance of every routing decision.
_CLOSED, _OPEN, _HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class CircuitBreaker:
    """Consecutive-failure breaker with a bounded half-open state and a growing open time.

    Every changing call returns the :data:`Transition` it made (or None), which the pool turns
    into an event; ``on_change(old, new, reason)`` is called on every transition as well.
    ``clock`` is injectable so tests can move time without sleeping; ``epoch`` is the pool's
    routing epoch, moved on every transition.
    """

    __slots__ = (
        "_clock",
        "_closed_at",
        "_consecutive_failures",
        "_on_change",
        "_open_for",
        "_opened_at",
        "_probes_in_flight",
        "_state",
        "_trips",
        "epoch",
        "failure_threshold",
        "half_open_requests",
        "max_recovery_timeout",
        "recovery_timeout",
        "total_trips",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        half_open_requests: int = 3,
        max_recovery_timeout: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
        epoch: Epoch | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if half_open_requests < 1:
            raise ValueError("half_open_requests must be >= 1")
        self.failure_threshold = failure_threshold
        self.recovery_timeout = float(recovery_timeout)
        self.half_open_requests = half_open_requests
        self.max_recovery_timeout = max(float(max_recovery_timeout), self.recovery_timeout)
        self._clock = clock
        self._on_change = on_change
        self.epoch = UNPOOLED if epoch is None else epoch
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._open_for = self.recovery_timeout
        self._trips = 0  # trips in a row without a lasting recovery; drives the growing open time
        self._closed_at = 0.0
        self._probes_in_flight = 0
        self.total_trips = 0

    # -- reading (never mutates) -------------------------------------------------------------

    def state_at(self, now: float | None = None) -> CircuitState:
        """The state as of ``now``: an open breaker whose time is up reads as half-open."""
        if self._state is _OPEN:
            now = self._clock() if now is None else now
            if now - self._opened_at >= self._open_for:
                return CircuitState.HALF_OPEN
        return self._state

    @property
    def state(self) -> CircuitState:
        return self.state_at()

    @property
    def is_open(self) -> bool:
        """True while requests are refused outright (open and not yet due for a probe)."""
        return self.state_at() is CircuitState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def open_for(self) -> float:
        """How long the current (or last) open period lasts, in seconds."""
        return self._open_for

    def retry_at(self) -> float | None:
        """Clock time when an open breaker admits its next probe, or None when not open."""
        if self._state is CircuitState.OPEN:
            return self._opened_at + self._open_for
        return None

    def allows(self, now: float | None = None) -> bool:
        """Whether :meth:`try_acquire` would admit a request now (no side effects)."""
        if self._state is _CLOSED:  # the hot path of every routing decision
            return True
        state = self.state_at(now)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN:
            probes = self._probes_in_flight if self._state is CircuitState.HALF_OPEN else 0
            return probes < self.half_open_requests
        return False

    # -- changing ----------------------------------------------------------------------------

    def try_acquire(self, now: float | None = None) -> bool:
        """Admit one request, or refuse it. A request admitted in half-open is a probe
        and must be followed by :meth:`record_success`, :meth:`record_failure` or :meth:`release`."""
        return self.admit(now)[0]

    def admit(self, now: float | None = None) -> tuple[bool, Transition | None]:
        """:meth:`try_acquire`, also returning the transition to half-open it made (if any)."""
        now = self._clock() if now is None else now
        if self._state is CircuitState.CLOSED:
            return True, None
        change = None
        if self._state is CircuitState.OPEN:
            if now - self._opened_at < self._open_for:
                return False, None
            change = self._transition(CircuitState.HALF_OPEN, "recovery timeout elapsed")
            self._probes_in_flight = 0
        if self._probes_in_flight >= self.half_open_requests:
            return False, change
        self._probes_in_flight += 1
        return True, change

    def release(self) -> None:
        """Give back a half-open probe slot without a verdict (cancelled or the caller's own error)."""
        if self._state is CircuitState.HALF_OPEN and self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def record_success(self, now: float | None = None) -> Transition | None:
        self._consecutive_failures = 0
        if self._state is CircuitState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._closed_at = self._clock() if now is None else now
            return self._transition(CircuitState.CLOSED, "probe succeeded")
        return None

    def record_failure(self, now: float | None = None, reason: str = "failure") -> Transition | None:
        now = self._clock() if now is None else now
        self._consecutive_failures += 1
        if self._state is CircuitState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            return self._trip(now, f"probe failed: {reason}")
        if self._state is CircuitState.CLOSED and self._consecutive_failures >= self.failure_threshold:
            return self._trip(now, f"{self._consecutive_failures} consecutive failures, last: {reason}")
        return None

    def reset(self) -> Transition | None:
        """Close the breaker and forget its history (an operator's manual override)."""
        self._consecutive_failures = 0
        self._trips = 0
        self._probes_in_flight = 0
        self._open_for = self.recovery_timeout
        if self._state is not CircuitState.CLOSED:
            return self._transition(CircuitState.CLOSED, "reset")
        return None

    def adopt(
        self,
        state: CircuitState,
        now: float,
        *,
        retry_in: float = 0.0,
        open_for: float | None = None,
        probe: bool = False,
        reason: str = "shared state",
    ) -> Transition | None:
        """Take a state another process decided (a shared store holds the pool-wide breaker).

        ``OPEN``: open until ``retry_in`` seconds from ``now`` (``open_for``: the whole open time).
        ``HALF_OPEN``: probing; ``probe`` counts one admitted here. ``CLOSED``: closed, failures
        forgotten. The rules that decide (trips, growth of the open time) stay in this class.
        """
        if state is _OPEN:
            if open_for is not None:
                self._open_for = max(open_for, 0.0)
            self._opened_at = now + retry_in - self._open_for
            self._probes_in_flight = 0
            self.epoch.bump()  # the retry time moved, even when the state did not
        elif state is _HALF_OPEN:
            if self._state is not _HALF_OPEN:
                self._probes_in_flight = 0
            if probe:
                self._probes_in_flight += 1
        else:
            self._consecutive_failures = 0
            self._probes_in_flight = 0
            if self._state is not _CLOSED:
                self._closed_at = now
        return self._transition(state, reason)

    # -- internals ---------------------------------------------------------------------------

    def _trip(self, now: float, reason: str) -> Transition | None:
        # A trip soon after a recovery means the instance is flapping: keep it out longer.
        recently_recovered = self._trips > 0 and (now - self._closed_at) < 2 * self._open_for
        self._trips = self._trips + 1 if (self._state is CircuitState.HALF_OPEN or recently_recovered) else 1
        self._open_for = min(self.recovery_timeout * (2 ** (self._trips - 1)), self.max_recovery_timeout)
        self._opened_at = now
        self._probes_in_flight = 0
        self.total_trips += 1
        return self._transition(CircuitState.OPEN, reason)

    def _transition(self, new: CircuitState, reason: str) -> Transition | None:
        old, self._state = self._state, new
        if old is new:
            return None
        self.epoch.bump()
        if self._on_change is not None:
            self._on_change(old, new, reason)
        return old, new, reason

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value}, failures={self._consecutive_failures}/"
            f"{self.failure_threshold}, open_for={self._open_for:g}s)"
        )
