"""The health state machine of one instance, as a table.

An instance is ``unknown`` until it is first heard from, ``healthy`` or ``degraded`` (routable,
degraded less preferred) while it answers, ``unhealthy`` (not routed to while anything else can
serve) after it stopped answering or its breaker opened. :data:`HEALTH_TABLE` says, for each
signal and state, which rules may move it; :func:`next_state` applies the first rule whose guard
holds. The table is pure (no I/O, no clock, no instance): the signals and the facts it reads come
from :mod:`gleitzeit_llm.routing.learning`, which applies the result.

=============== ========= ============================================ =========
signal          from      when                                         to
=============== ========= ============================================ =========
probe_passed    unknown   always                                       healthy
probe_passed    degraded  2 passes in a row and the breaker is closed  healthy
probe_passed    unhealthy always (hysteresis: back, but less preferred) degraded
probe_failed    unknown   always                                       unhealthy
probe_failed    healthy   2 failures in a row                          unhealthy
probe_failed    healthy   otherwise                                    degraded
probe_failed    degraded  2 failures in a row                          unhealthy
served          unknown   always                                       healthy
served          degraded  the request was a half-open probe            healthy
failed          healthy   2 failed requests in a row                   degraded
breaker_opened  any       unless already unhealthy                     unhealthy
=============== ========= ============================================ =========

Entering ``healthy`` or ``degraded`` restarts the count of failed probes
(:data:`RESETS_PROBE_FAILURES`): one failed probe after a recovery degrades, it does not condemn.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import NamedTuple

__all__ = [
    "HEALTH_TABLE",
    "RESETS_PROBE_FAILURES",
    "Facts",
    "InstanceState",
    "Rule",
    "Signal",
    "next_state",
]


class InstanceState(str, enum.Enum):
    """Health of an instance, as the health monitor and real traffic judge it."""

    HEALTHY = "healthy"  # answering and fast enough
    DEGRADED = "degraded"  # answering, but failing or slow: routable, less preferred
    UNHEALTHY = "unhealthy"  # not answering: not routed to while anything else can serve
    UNKNOWN = "unknown"  # not checked yet: routable

    def __str__(self) -> str:
        return self.value


class Signal(str, enum.Enum):
    """What happened to an instance that may move its health."""

    PROBE_PASSED = "probe_passed"  # a health check round answered
    PROBE_FAILED = "probe_failed"  # a health check round did not
    SERVED = "served"  # a request succeeded
    FAILED = "failed"  # a request failed through the instance's fault
    BREAKER_OPENED = "breaker_opened"  # its circuit breaker tripped


class Facts(NamedTuple):
    """What the guards read (only the fields a signal's rules need are filled in)."""

    probe_passes: int = 0  # passing health checks in a row, this one included
    probe_failures: int = 0  # failing health checks in a row, this one included
    breaker_closed: bool = True
    failures: int = 0  # failed requests in a row (the breaker's count)
    probe_request: bool = False  # the request was a half-open breaker's probe
    detail: str = ""  # the probe's error or the breaker's reason, for the reason text


class Rule(NamedTuple):
    """Move to ``to`` when ``when(facts)`` holds (always without a guard); ``reason`` is
    formatted with the facts' fields."""

    to: InstanceState
    reason: str
    when: Callable[[Facts], bool] | None = None


_HEALTHY, _DEGRADED, _UNHEALTHY, _UNKNOWN = (
    InstanceState.HEALTHY,
    InstanceState.DEGRADED,
    InstanceState.UNHEALTHY,
    InstanceState.UNKNOWN,
)


def _two_probes_failed(f: Facts) -> bool:
    return f.probe_failures >= 2


_PROBE_FAILED = Rule(_UNHEALTHY, "health check failed: {detail}", _two_probes_failed)
_BREAKER_OPENED = (Rule(_UNHEALTHY, "circuit breaker opened: {detail}"),)

HEALTH_TABLE: Mapping[tuple[Signal, InstanceState], tuple[Rule, ...]] = {
    (Signal.PROBE_PASSED, _UNKNOWN): (Rule(_HEALTHY, "health check passed"),),
    (Signal.PROBE_PASSED, _DEGRADED): (
        Rule(_HEALTHY, "health checks pass", lambda f: f.probe_passes >= 2 and f.breaker_closed),
    ),
    (Signal.PROBE_PASSED, _UNHEALTHY): (Rule(_DEGRADED, "health check answered again"),),
    (Signal.PROBE_FAILED, _UNKNOWN): (Rule(_UNHEALTHY, "health check failed: {detail}"),),
    (Signal.PROBE_FAILED, _HEALTHY): (_PROBE_FAILED, Rule(_DEGRADED, "health check failed: {detail}")),
    (Signal.PROBE_FAILED, _DEGRADED): (_PROBE_FAILED,),
    (Signal.SERVED, _UNKNOWN): (Rule(_HEALTHY, "served a request"),),
    (Signal.SERVED, _DEGRADED): (Rule(_HEALTHY, "probe request succeeded", lambda f: f.probe_request),),
    (Signal.FAILED, _HEALTHY): (Rule(_DEGRADED, "{failures} failures in a row", lambda f: f.failures >= 2),),
    (Signal.BREAKER_OPENED, _UNKNOWN): _BREAKER_OPENED,
    (Signal.BREAKER_OPENED, _HEALTHY): _BREAKER_OPENED,
    (Signal.BREAKER_OPENED, _DEGRADED): _BREAKER_OPENED,
}

RESETS_PROBE_FAILURES = frozenset({_HEALTHY, _DEGRADED})


def next_state(state: InstanceState, signal: Signal, facts: Facts) -> tuple[InstanceState, str] | None:
    """The state ``signal`` moves ``state`` to and why, or None when it stays.

    >>> next_state(InstanceState.UNHEALTHY, Signal.PROBE_PASSED, Facts())
    (<InstanceState.DEGRADED: 'degraded'>, 'health check answered again')
    """
    for rule in HEALTH_TABLE.get((signal, state), ()):
        if rule.when is None or rule.when(facts):
            return rule.to, rule.reason.format(**facts._asdict())
    return None
