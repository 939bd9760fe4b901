"""What the pool learns from a finished attempt and from a health probe: the rules, by the state.

:func:`record_outcome` and :func:`record_probe` update one instance (its counters, latency
estimates, breaker, health, residency, missing models, busy window) and return the
:class:`Transitions` they made; they never emit, wake or lock. The manager calls them (through
its state store) under its lock and turns the transitions into events and wake-ups, as tower's
``PeakEwma`` updates its own estimate and the balancer only reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from gleitzeit_llm.errors import InstanceBusyError, ModelNotFoundError, RequestError
from gleitzeit_llm.ollama.names import spelling_key
from gleitzeit_llm.routing.breaker import CircuitState
from gleitzeit_llm.routing.breaker import Transition as BreakerTransition
from gleitzeit_llm.routing.transitions import RESETS_PROBE_FAILURES, Facts, InstanceState, Signal, next_state

if TYPE_CHECKING:
    from gleitzeit_llm.routing.concurrency import ModelLimits
    from gleitzeit_llm.routing.health import ProbeResult
    from gleitzeit_llm.routing.instance import OllamaInstance

__all__ = [
    "BUSY_BACKOFF",
    "NOTHING",
    "Change",
    "Observation",
    "Outcome",
    "Transitions",
    "breaker_change",
    "classify",
    "record_outcome",
    "record_probe",
]

# Busy (503/429) without Retry-After: keep the instance out of rotation this long.
BUSY_BACKOFF = 1.0

_CLOSED, _OPEN = CircuitState.CLOSED, CircuitState.OPEN
_HEALTHY, _DEGRADED, _UNKNOWN = InstanceState.HEALTHY, InstanceState.DEGRADED, InstanceState.UNKNOWN


class Outcome:
    """How an attempt ended, as the pool counts it."""

    SUCCESS = "success"
    FAILURE = "failure"
    BUSY = "busy"
    MODEL_MISSING = "model_missing"
    CALLER_ERROR = "caller_error"
    CANCELLED = "cancelled"


def classify(exc: BaseException | None) -> str:
    """The :class:`Outcome` of an attempt that ended with ``exc`` (None: success)."""
    if exc is None:
        return Outcome.SUCCESS
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt)):
        return Outcome.CANCELLED
    if isinstance(exc, RequestError):
        return Outcome.CALLER_ERROR
    if isinstance(exc, ModelNotFoundError):
        return Outcome.MODEL_MISSING
    if isinstance(exc, InstanceBusyError):
        return Outcome.BUSY
    return Outcome.FAILURE


@dataclass(slots=True)  # built positionally, once per finished attempt, on the per-call path
class Observation:
    """One finished attempt, as the pool learns from it (what a remote store would be sent).

    ``model``/``spelling``: the model_key and spelling_key routed; ``probe``: admitted by a
    half-open breaker; ``panic``: routed with nothing healthy; ``duration`` and ``ttft`` in
    seconds; ``eval_duration``: the server's own generation time for ``output_tokens``;
    ``caller_paced``: the time after the first chunk followed the caller's reading;
    ``queue_time`` and ``service_time``: seconds it waited inside the server and the server
    worked on it (the server's durations), None when unknown; ``started``: when the attempt
    took its slot (``time.monotonic()``); ``sent_with``: requests of its model in flight on the
    instance then, itself included (0: not counted).
    """

    outcome: str
    model: str | None
    spelling: str | None
    probe: bool
    panic: bool
    duration: float
    ttft: float | None
    output_tokens: int | None = None
    eval_duration: float | None = None
    caller_paced: bool = False
    keep_alive: float | None = None
    cold_load: bool = False
    error: BaseException | None = None
    queue_time: float | None = None
    service_time: float | None = None
    started: float | None = None
    sent_with: int = 0


class Change(NamedTuple):
    """One state change: ``subject`` is ``"health"`` or ``"breaker"``."""

    subject: str
    old: str
    new: str
    reason: str


@dataclass(slots=True)
class Transitions:
    """What one record call changed, in order, for the manager to act on.

    ``changes``: health and breaker changes (each becomes an event); ``busy_until``: the busy
    window set, or None; ``filters_changed``: installed or missing models changed (the router's
    cached filters must be forgotten); ``model_missing``: a 404 was learned; ``probe_round``:
    residency may have changed behind the pool's back (ask for a health round now);
    ``limit_raised``: a learned concurrency limit went up (waiters may fit now);
    ``routing_changed``: what is routable may have changed (every waiter is worth another try).
    """

    changes: tuple[Change, ...] = ()
    busy_until: float | None = None
    filters_changed: bool = False
    model_missing: bool = False
    probe_round: bool = False
    limit_raised: bool = False
    routing_changed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.routing_changed = (
            bool(self.changes) or self.busy_until is not None or self.model_missing or self.limit_raised
        )

    def __bool__(self) -> bool:
        return self.routing_changed or self.filters_changed or self.probe_round


NOTHING = Transitions()  # shared and never mutated: the common answer allocates nothing


def breaker_change(transition: BreakerTransition) -> Change:
    old, new, reason = transition
    return Change("breaker", old.value, new.value, reason)


def _health(inst: OllamaInstance, signal: Signal, facts: Facts, changes: list[Change]) -> None:
    moved = next_state(inst.state, signal, facts)
    if moved is None:
        return
    new, reason = moved
    old = inst.state
    inst.state = new
    if new in RESETS_PROBE_FAILURES:
        inst.consecutive_probe_failures = 0
    changes.append(Change("health", old.value, new.value, reason))


def record_outcome(inst: OllamaInstance, obs: Observation, now: float, max_retry_after: float) -> Transitions:
    """Learn from one finished attempt on ``inst`` (its slot is released separately).

    ``max_retry_after`` caps the busy window a Retry-After asks for.
    """
    outcome = obs.outcome
    m = inst.metrics
    breaker = inst.breaker
    changes: list[Change] = []
    busy_until = None
    filters_changed = model_missing = probe_round = limit_raised = False
    if outcome == Outcome.SUCCESS:
        duration, ttft, cold_load, output_tokens = obs.duration, obs.ttft, obs.cold_load, obs.output_tokens
        m.total_requests += 1
        m.successful_requests += 1
        m.durations.append(duration)
        m.outcomes.append(True)
        m.last_success_at = now
        if cold_load:
            m.cold_loads += 1
            # Loading a model may have evicted others here: learn from /api/ps now rather
            # than route to a model that is gone until the next health round.
            probe_round = True
        first = ttft if ttft is not None else duration
        if not cold_load:  # a model load says nothing about the instance's speed
            m.ttft.observe(first, now)
            if output_tokens:
                if obs.eval_duration:  # the server's own pace, whoever read the answer how fast
                    m.tpot.observe(obs.eval_duration / output_tokens, now)
                elif output_tokens > 1 and duration > first and not obs.caller_paced:
                    m.tpot.observe((duration - first) / (output_tokens - 1), now)
        filters_changed = inst.note_served(obs.model, now, obs.keep_alive, obs.spelling)
        limits = inst.limits
        if limits is not None:  # adaptive concurrency
            limit_raised = _learn_limit(limits, inst, obs)
        # An open breaker that lets a success through was bypassed by a panic attempt: the
        # instance is back.
        moved = breaker.reset() if breaker.state_at(now) is _OPEN else breaker.record_success(now)
        if moved is not None:
            changes.append(breaker_change(moved))
        state = inst.state
        if state is _UNKNOWN or state is _DEGRADED:  # the only states a success moves
            _health(inst, Signal.SERVED, Facts(probe_request=obs.probe), changes)
    elif outcome == Outcome.FAILURE:
        error = obs.error
        m.total_requests += 1
        m.failed_requests += 1
        m.outcomes.append(False)
        m.last_error = f"{type(error).__name__}: {error}"
        m.last_failure_at = now
        # Peak-EWMA alone would make a fast-failing instance look cheap (a black hole).
        current = m.ttft.value_at(now) or 0.0
        m.ttft.observe(max(obs.duration, 2 * current, 1.0), now)
        # A panic attempt on a broken instance is no news to an open breaker.
        if not obs.panic or breaker.state_at(now) is _CLOSED:
            moved = breaker.record_failure(now, reason=type(error).__name__)
            if moved is not None:
                changes.append(breaker_change(moved))
                if moved[1] is _OPEN:
                    _health(inst, Signal.BREAKER_OPENED, Facts(detail=moved[2]), changes)
        if inst.state is _HEALTHY:
            _health(inst, Signal.FAILED, Facts(failures=breaker.consecutive_failures), changes)
    else:
        if obs.probe:
            breaker.release()
        if outcome == Outcome.BUSY:
            m.busy_rejections += 1
            busy_until = _mark_busy(inst, obs.error, now, max_retry_after)
        elif outcome == Outcome.MODEL_MISSING:
            model_missing = True
            if obs.model is not None:
                inst.missing_models.add(_missing_spelling(obs))
                filters_changed = True
        elif outcome == Outcome.CALLER_ERROR:
            m.total_requests += 1
    if not (
        changes or busy_until is not None or filters_changed or model_missing or probe_round or limit_raised
    ):
        return NOTHING
    return Transitions(
        tuple(changes),
        busy_until=busy_until,
        filters_changed=filters_changed,
        model_missing=model_missing,
        probe_round=probe_round,
        limit_raised=limit_raised,
    )


def _learn_limit(limits: ModelLimits, inst: OllamaInstance, obs: Observation) -> bool:
    """Feed the server's queue time to the model's learned limit; True when the limit went up."""
    queue, service, model = obs.queue_time, obs.service_time, obs.model
    if queue is None or service is None or model is None:
        return False
    # Not counted at acquire: what is in flight now, plus this request (its slot is released).
    in_flight = obs.sent_with or inst.in_flight_by_model.get(model, 0) + 1
    mono = time.monotonic()  # the clock of Lease.started, whatever clock the pool runs on
    sent_at = obs.started if obs.started is not None else mono
    return limits.observe(model, queue, service, in_flight, sent_at, mono)


def record_probe(inst: OllamaInstance, result: ProbeResult, now: float) -> Transitions:
    """Learn from one health check round on ``inst``."""
    m = inst.metrics
    m.probes += 1
    m.probe_outcomes.append(result.ok)
    changes: list[Change] = []
    if result.ok:
        inst.consecutive_probe_failures = 0
        inst.consecutive_probe_successes += 1
        inst.version = result.version
        inst.installed_models = result.installed
        inst.missing_models.clear()  # /api/tags is the authority on what is installed
        inst.loaded_models = {model: now + left for model, left in result.loaded.items()}
        facts = Facts(
            probe_passes=inst.consecutive_probe_successes,
            breaker_closed=inst.breaker.state_at(now) is _CLOSED,
        )
        _health(inst, Signal.PROBE_PASSED, facts, changes)
        return Transitions(tuple(changes), filters_changed=True)
    m.probe_failures += 1
    inst.consecutive_probe_successes = 0
    inst.consecutive_probe_failures += 1
    m.last_error = result.error
    facts = Facts(probe_failures=inst.consecutive_probe_failures, detail=str(result.error))
    _health(inst, Signal.PROBE_FAILED, facts, changes)
    return Transitions(tuple(changes)) if changes else NOTHING


def _mark_busy(inst: OllamaInstance, error: BaseException | None, now: float, cap: float) -> float:
    """Out of rotation for the server's Retry-After, capped: one 429 with a day-long
    Retry-After (a misconfigured proxy) must not take an instance out for a day."""
    retry_after = getattr(error, "retry_after", None)
    status = getattr(error, "status", None)
    answer = f"HTTP {status}" if status else "busy"
    if retry_after:
        wait = min(retry_after, cap)
        capped = f", capped at {cap:g}s" if retry_after > cap else ""
        reason = f"busy: answered {answer} with Retry-After {retry_after:g}s{capped}"
    else:
        wait = min(BUSY_BACKOFF, cap)
        reason = f"busy: answered {answer} without Retry-After, backing off {wait:g}s"
    inst.busy_reason = reason
    inst.busy_until = now + wait
    return inst.busy_until


def _missing_spelling(obs: Observation) -> str:
    """What a 404 is learned for: exactly the spelling the server could not resolve.

    Ollama's ``model 'X' not found`` names the request's model verbatim, which the error keeps
    as ``model``; a different spelling of the same model may still resolve there (lookups are
    case-sensitive on some routes and versions), so it is not marked missing.
    """
    named = getattr(obs.error, "model", None)
    if isinstance(named, str):
        with contextlib.suppress(RequestError):
            return spelling_key(named)
    return obs.spelling or obs.model or ""
