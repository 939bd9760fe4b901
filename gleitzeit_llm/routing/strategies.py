"""Choosing an instance: one pipeline, filter -> score -> pick, for every strategy.

Filters remove what cannot serve the request (removed, already tried, wrong tags, model absent,
unhealthy or breaker open, full, lower priority tier, over ``max_latency``). A strategy is a small
scorer over instance state (lower is better); adding one is a function plus a line in
:data:`SCORERS`. The pick is the lowest score with a random tie-break, except for the two
strategies whose whole point is a different pick: ``round_robin`` (exact rotation) and
``weighted`` (random in proportion to the weights).

Routing does no I/O and never sleeps: it is a scan over the instances (the pools are small, so a
full scan beats power-of-two-choices; see routing-science §1.3).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gleitzeit_llm.routing.breaker import CircuitState
from gleitzeit_llm.routing.instance import InstanceState, OllamaInstance

__all__ = ["SCORERS", "STRATEGY_NAMES", "Route", "RouteRequest", "Router"]

# Cost of an instance that has work in flight but no latency sample yet: do not pile onto an
# unmeasured instance, but do send it one request (cost 0 when idle) so it gets measured.
UNMEASURED_BUSY_COST = 1e9
_TIE = 1e-9


@dataclass(frozen=True)
class RouteRequest:
    """What the router needs to know about one request (model already normalised)."""

    model: str | None = None
    strategy: str = "least_loaded"
    tags: frozenset[str] = frozenset()
    max_latency: float | None = None  # seconds
    exclude: frozenset[str] = frozenset()  # instance ids already tried in this call
    require_healthy: bool = True  # False: unhealthy instances and open breakers count as eligible


@dataclass(frozen=True)
class Route:
    """The router's answer: an instance, or why there is none.

    ``instance`` is None when nothing can take the request now. Then ``saturated`` says whether
    eligible instances exist but are all full (so waiting for a slot helps), and ``reason`` says
    which filter removed the rest.
    """

    instance: OllamaInstance | None
    candidates: int = 0
    saturated: bool = False
    panic: bool = False
    reason: str = ""


Scorer = Callable[[OllamaInstance, RouteRequest, float, float], float]


def _least_loaded(inst: OllamaInstance, req: RouteRequest, now: float, expected_tokens: float) -> float:
    return inst.in_flight / inst.max_concurrent


def _latency(inst: OllamaInstance, req: RouteRequest, now: float, expected_tokens: float) -> float:
    # Peak-EWMA cost: expected time for one request times the queue it joins.
    estimate = inst.latency_estimate(now, expected_tokens)
    if estimate is None:
        return 0.0 if inst.in_flight == 0 else UNMEASURED_BUSY_COST + inst.in_flight
    return estimate * (inst.in_flight + 1)


def _model_affinity(inst: OllamaInstance, req: RouteRequest, now: float, expected_tokens: float) -> float:
    # Resident first, then installed, then the rest; least loaded within each class.
    if req.model is None or inst.is_loaded(req.model, now):
        residency = 0.0
    elif inst.is_installed(req.model):
        residency = 1.0
    else:
        residency = 2.0
    return residency + inst.in_flight / (inst.max_concurrent + 1)


SCORERS: dict[str, Scorer] = {
    "least_loaded": _least_loaded,
    "priority": _least_loaded,  # tiers are a filter for every strategy; inside a tier, least loaded
    "latency_based": _latency,
    "model_affinity": _model_affinity,
    "round_robin": _least_loaded,  # pick is special-cased below
    "weighted": _least_loaded,  # pick is special-cased below
}
STRATEGY_NAMES = tuple(SCORERS)


class Router:
    """Stateless apart from the round-robin cursor, the expected-output-length estimate and its RNG."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._rr_cursor = 0
        self.expected_tokens = 128.0  # EWMA of output tokens per request, weighs TTFT vs TPOT

    def observe_output_tokens(self, tokens: int) -> None:
        self.expected_tokens += 0.1 * (tokens - self.expected_tokens)

    def select(self, instances: Sequence[OllamaInstance], req: RouteRequest, now: float) -> Route:
        eligible: list[tuple[int, OllamaInstance]] = []
        counts = {"removed": 0, "tags": 0, "model": 0}
        excluded: list[tuple[int, OllamaInstance]] = []
        for position, inst in enumerate(instances):
            if inst.removed:
                counts["removed"] += 1
            elif req.tags and not req.tags <= inst.tags:
                counts["tags"] += 1
            elif not inst.may_serve(req.model):
                counts["model"] += 1
            elif inst.id in req.exclude:
                excluded.append((position, inst))
            else:
                eligible.append((position, inst))
        if not eligible:
            # A retry goes back to an instance already tried only when nothing else exists.
            eligible = excluded
        if not eligible:
            return Route(None, reason=self._why_none(len(instances), counts, req))

        routable = [(p, i) for p, i in eligible if i.routable(now)]
        panic = not routable
        if not req.require_healthy:
            routable = eligible
        elif panic:
            # Nothing healthy: try anyway rather than fail everything, least recently failed first.
            routable = sorted(eligible, key=lambda pi: pi[1].metrics.last_failure_at or 0.0)[:1]

        free = [(p, i) for p, i in routable if i.has_capacity() and i.busy_until <= now]
        if not free:
            return Route(None, candidates=len(routable), saturated=True, panic=panic, reason="all full")

        tier = min(i.priority for _, i in free)
        free = [(p, i) for p, i in free if i.priority == tier]

        if req.max_latency is not None:
            fast = [
                (p, i)
                for p, i in free
                if (est := i.latency_estimate(now, self.expected_tokens)) is None or est <= req.max_latency
            ]
            free = fast or free

        # Degraded instances only take overflow, except one whose breaker wants a probe request:
        # recovery is proven with real traffic, so it must get some.
        preferred = [
            (p, i)
            for p, i in free
            if i.state is not InstanceState.DEGRADED or i.breaker.state_at(now) is CircuitState.HALF_OPEN
        ]
        free = preferred or free

        chosen = self._pick(free, req, now, len(instances))
        # "panic" tells the caller to bypass the breaker: nothing routable was chosen on purpose.
        return Route(chosen, candidates=len(free), panic=not chosen.routable(now))

    def _pick(
        self, free: list[tuple[int, OllamaInstance]], req: RouteRequest, now: float, size: int
    ) -> OllamaInstance:
        if len(free) == 1:
            position, inst = free[0]
            if req.strategy == "round_robin":
                self._rr_cursor = position + 1
            return inst
        if req.strategy == "round_robin":
            cursor = self._rr_cursor
            position, inst = min(free, key=lambda pi: (pi[0] - cursor) % size)
            self._rr_cursor = position + 1
            return inst
        if req.strategy == "weighted":
            return self._rng.choices([i for _, i in free], weights=[i.weight for _, i in free])[0]
        scorer = SCORERS.get(req.strategy, _least_loaded)
        best: list[OllamaInstance] = []
        best_score = float("inf")
        for _, inst in free:
            score = scorer(inst, req, now, self.expected_tokens)
            if score < best_score - _TIE:
                best, best_score = [inst], score
            elif score <= best_score + _TIE:
                best.append(inst)
        return best[0] if len(best) == 1 else self._rng.choice(best)

    @staticmethod
    def _why_none(total: int, counts: dict[str, int], req: RouteRequest) -> str:
        if total == 0 or counts["removed"] == total:
            return "the pool has no instances"
        parts = []
        if counts["tags"]:
            parts.append(f"{counts['tags']} lack the tags {sorted(req.tags)}")
        if counts["model"]:
            parts.append(f"{counts['model']} do not have model {req.model!r}")
        if counts["removed"]:
            parts.append(f"{counts['removed']} were removed")
        return f"no instance can serve this request: {', '.join(parts)}"
