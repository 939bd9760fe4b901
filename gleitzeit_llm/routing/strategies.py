"""Choosing an instance: one pipeline, filter -> score -> pick, for every strategy.

Filters remove what cannot serve the request (removed, already tried, wrong tags, model absent,
unhealthy or breaker open, full, lower priority tier, over ``max_latency``). A strategy is a small
scorer over instance state (lower is better); adding one is a function plus a line in
:data:`SCORERS` and a member of ``LoadBalancingStrategy`` (the two are checked against each other
at import). The pick is the lowest score with a random tie-break, except for the strategies
whose whole point is a different pick: ``round_robin`` (exact rotation), ``weighted`` (random in
proportion to the weights) and ``cache_aware`` (the longest cached prompt prefix within a bounded
share of the load, :mod:`~gleitzeit_llm.routing.affinity`); a ``session_id`` hint overrides the
pick of any strategy the same way.

Routing does no I/O and never sleeps: it is a scan over the instances (the pools are small, so a
full scan beats power-of-two-choices; see routing-science §1.3).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from gleitzeit_llm.config import LoadBalancingStrategy
from gleitzeit_llm.routing.affinity import MATCH_THRESHOLD, CacheSlots, rendezvous, within_bound
from gleitzeit_llm.routing.breaker import _CLOSED, CircuitState
from gleitzeit_llm.routing.epoch import UNPOOLED, Epoch
from gleitzeit_llm.routing.instance import InstanceState, OllamaInstance
from gleitzeit_llm.routing.prefix import PrefixIndex, PromptPrefix

__all__ = ["SCORERS", "STRATEGY_NAMES", "Route", "RouteRequest", "Router", "check_scorers"]

# Cost of an instance that has work in flight but no latency sample yet: do not pile onto an
# unmeasured instance, but do send it one request (cost 0 when idle) so it gets measured.
UNMEASURED_BUSY_COST = 1e9
_UNHEALTHY, _DEGRADED = InstanceState.UNHEALTHY, InstanceState.DEGRADED
_TIE = 1e-9
_TIE_BREAK = 1e-3  # a bonus that only decides between (nearly) equal scores


@dataclass(frozen=True)
class _Routable:
    epoch: int
    static: list[tuple[int, OllamaInstance]]
    computed_at: float
    valid_until: float
    tiers: list[tuple[list[tuple[int, OllamaInstance]], bool]]


@dataclass(frozen=True)
class RouteRequest:
    """What the router needs to know about one request (model already normalised).

    ``model`` is the case-folded :func:`~gleitzeit_llm.ollama.names.model_key` (matched against
    what instances have installed and loaded); ``spelling`` the
    :func:`~gleitzeit_llm.ollama.names.spelling_key` of the name as sent (matched against the
    404s learned for it). Without ``spelling``, ``model`` stands for both.
    """

    model: str | None = None
    strategy: str = "least_loaded"
    tags: frozenset[str] = frozenset()
    max_latency: float | None = None  # seconds
    exclude: frozenset[str] = frozenset()  # instance ids already tried in this call
    require_healthy: bool = True  # False: unhealthy instances and open breakers count as eligible
    allow_cold: bool = True  # model_affinity: False waits for a full instance that has the model loaded
    spelling: str | None = None
    # The prompt's chained block hashes: set only for cache_aware or a prefix_weight (hashed
    # once per call, outside the pool's lock).
    prefix: PromptPrefix | None = None
    session: str | None = None  # the session_id hint: rendezvous stickiness, bounded by load


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


# A scorer rates every candidate at once (one call per decision, not per instance); lower is better.
Scorer = Callable[[Sequence[OllamaInstance], RouteRequest, float, float], list[float]]


def _least_loaded(
    insts: Sequence[OllamaInstance], req: RouteRequest, now: float, expected_tokens: float
) -> list[float]:
    return [i.in_flight / i.max_concurrent for i in insts]


def _latency(
    insts: Sequence[OllamaInstance], req: RouteRequest, now: float, expected_tokens: float
) -> list[float]:
    # Peak-EWMA cost: expected time for one request (OllamaInstance.latency_estimate, with
    # PeakEwma.value_at inlined over its public estimate/observed_at: two method calls per
    # instance were half the cost of a decision) times the queue it joins.
    exp = math.exp
    out = []
    for i in insts:
        m = i.metrics
        t = m.ttft
        v = t.estimate
        if v is None:
            out.append(0.0 if i.in_flight == 0 else UNMEASURED_BUSY_COST + i.in_flight)
            continue
        p = m.tpot
        pv = p.estimate
        stamp = t.observed_at
        idle = now - stamp
        if pv is not None and p.observed_at == stamp and p.decay == t.decay:
            # Both observed by the same finish (the usual case): one exp for both.
            v += pv * expected_tokens
            if idle > 0.0:
                v *= exp(-idle / t.decay)
        else:
            if idle > 0.0:
                v *= exp(-idle / t.decay)
            if pv is not None:
                idle = now - p.observed_at
                if idle > 0.0:
                    pv *= exp(-idle / p.decay)
                v += pv * expected_tokens
        out.append(v * (i.in_flight + 1))
    return out


def _model_affinity(
    insts: Sequence[OllamaInstance], req: RouteRequest, now: float, expected_tokens: float
) -> list[float]:
    model = req.model
    if model is None:
        return [i.in_flight / (i.max_concurrent + 1) for i in insts]
    out = []
    for i in insts:  # resident (0) < installed (1) < other (2)
        until = i.loaded_models.get(model)
        if until is not None and until > now:
            base = 0.0
        else:
            inst_models = i.installed_models
            installed = model in inst_models if inst_models is not None else model in i.configured_models
            base = 1.0 if installed else 2.0
        out.append(base + i.in_flight / (i.max_concurrent + 1))
    return out


SCORERS: dict[str, Scorer] = {
    "least_loaded": _least_loaded,
    "priority": _least_loaded,  # tiers are a filter for every strategy; inside a tier, least loaded
    "latency_based": _latency,
    "model_affinity": _model_affinity,
    "round_robin": _least_loaded,  # pick is special-cased below
    "weighted": _least_loaded,  # pick is special-cased below
    "cache_aware": _least_loaded,  # pick is special-cased below (Router._pick_affine)
}
STRATEGY_NAMES = tuple(SCORERS)


def check_scorers(strategies: Iterable[str], scorers: Mapping[str, Scorer]) -> None:
    """Raise :class:`RuntimeError` unless every strategy has a scorer and every scorer a strategy.

    Run at import against :class:`~gleitzeit_llm.config.LoadBalancingStrategy`, so a strategy
    added to one and not the other fails at once instead of routing as least loaded.
    """
    names = list(strategies)
    problems = [f"{name!r} has no scorer in SCORERS" for name in names if name not in scorers]
    problems += [f"scorer {name!r} is no LoadBalancingStrategy" for name in scorers if name not in names]
    if problems:
        raise RuntimeError(
            f"routing strategies out of step: {'; '.join(problems)} (a strategy is a member of "
            "LoadBalancingStrategy in gleitzeit_llm/config and a scorer in routing/strategies.py)"
        )


check_scorers([member.value for member in LoadBalancingStrategy], SCORERS)
_STATIC_CACHE_SIZE = 64


class Router:
    """Stateless apart from the round-robin cursor, the expected-output-length estimate and its RNG.

    ``epoch`` is the routing epoch of the pool whose instances it routes over (their state and
    breakers move it): the cached health filters hold while it stands still. ``limited``: the
    instances carry learned per-model limits (adaptive concurrency) that capacity must respect.
    """

    def __init__(
        self, rng: random.Random | None = None, epoch: Epoch | None = None, *, limited: bool = False
    ) -> None:
        self._rng = rng or random.Random()
        self._limited = limited
        self._epoch = UNPOOLED if epoch is None else epoch
        self._rr_cursor = 0
        self.expected_tokens = 128.0  # EWMA of output tokens per request, weighs TTFT vs TPOT
        # Affinity (routing/affinity.py): the prefix index the pool records into, the
        # bounded-load epsilon, the prefix score term of other strategies and cache_aware's
        # pick when nothing matches (load_balancing.balance_epsilon, prefix_weight, prefix_fallback).
        self.prefix_index = PrefixIndex()
        self.cache_slots = CacheSlots()  # when cache_aware last used each server's slots
        self.balance_epsilon = 0.25
        self.prefix_weight = 0.0
        self.prefix_fallback = "least_loaded"
        # (instances list, tags, model) -> the instances that pass the filters that change only
        # when the pool's configuration or knowledge changes (removed, tags, model present).
        self._static: dict[
            tuple[int, frozenset[str], str | None, str | None],
            tuple[object, list[tuple[int, OllamaInstance]]],
        ] = {}

        # The same key -> the static candidates that pass the filters that change with health
        # (state, breaker, busy), by priority tier; valid while the routing epoch stands still
        # and until the first busy mark or open breaker in it runs out.
        self._dynamic: dict[tuple[int, frozenset[str], str | None, str | None], _Routable] = {}

    def invalidate(self) -> None:
        """Forget cached filter results: call after changing ``removed``, ``tags``, ``priority``,
        the configured, installed or missing models of an instance, or the instance list in place."""
        self._static.clear()
        self._dynamic.clear()

    def _static_candidates(
        self, instances: Sequence[OllamaInstance], req: RouteRequest
    ) -> list[tuple[int, OllamaInstance]]:
        key = (id(instances), req.tags, req.model, req.spelling)
        hit = self._static.get(key)
        if hit is not None and hit[0] is instances:  # the entry holds the list, so ids cannot be reused
            return hit[1]
        tags, model, spelling = req.tags, req.model, req.spelling
        found = [
            (position, inst)
            for position, inst in enumerate(instances)
            if not inst.removed and (not tags or tags <= inst.tags) and inst.may_serve(model, spelling)
        ]
        if len(self._static) >= _STATIC_CACHE_SIZE:
            self._static.clear()
        self._static[key] = (instances, found)
        return found

    def observe_output_tokens(self, tokens: int) -> None:
        self.expected_tokens += 0.1 * (tokens - self.expected_tokens)

    def _routable_tiers(
        self, instances: Sequence[OllamaInstance], req: RouteRequest, now: float
    ) -> list[tuple[list[tuple[int, OllamaInstance]], bool]] | None:
        """The routable static candidates by ascending priority, each tier with "may hold a
        degraded instance"; None when a half-open breaker needs the live check."""
        static = self._static_candidates(instances, req)
        key = (id(instances), req.tags, req.model, req.spelling)
        hit = self._dynamic.get(key)
        tick = self._epoch.value
        if (
            hit is not None
            and hit.epoch == tick
            and hit.static is static
            and hit.computed_at <= now < hit.valid_until
        ):
            return hit.tiers
        by_tier: dict[int, list[tuple[int, OllamaInstance]]] = {}
        degraded: set[int] = set()
        valid_until = math.inf
        for pi in static:
            inst = pi[1]
            if inst.state is _UNHEALTHY:
                continue
            breaker = inst.breaker
            if breaker._state is not _CLOSED:
                retry_at = breaker.retry_at()
                if retry_at is None or retry_at <= now:
                    return None  # half-open, or due for its probe: admission is decided live
                valid_until = min(valid_until, retry_at)
                continue
            if inst.busy_until > now:
                valid_until = min(valid_until, inst.busy_until)
                continue
            by_tier.setdefault(inst.priority, []).append(pi)
            if inst.state is _DEGRADED:
                degraded.add(inst.priority)
        tiers = [(by_tier[p], p in degraded) for p in sorted(by_tier)]
        if len(self._dynamic) >= _STATIC_CACHE_SIZE:
            self._dynamic.clear()
        self._dynamic[key] = _Routable(tick, static, now, valid_until, tiers)
        return tiers

    def select(self, instances: Sequence[OllamaInstance], req: RouteRequest, now: float) -> Route:
        tiers = None if req.exclude or not req.require_healthy else self._routable_tiers(instances, req, now)
        if tiers is not None:
            # Only the slot count changes between two decisions in the common case: one
            # comprehension per tier instead of every filter per instance.
            for members, maybe_degraded in tiers:
                free = [pi for pi in members if pi[1].in_flight < pi[1].max_concurrent]
                if self._limited and free:
                    free = [pi for pi in free if pi[1].admits(req.model)]
                if free:
                    degraded = maybe_degraded and any(pi[1].state is _DEGRADED for pi in free)
                    return self._decide(free, instances, req, now, degraded)
        # Retries (some instances already tried), half-open breakers, nothing free, nothing
        # healthy: the full scan.
        return self._select_slow(instances, req, now)

    def _decide(
        self,
        free: list[tuple[int, OllamaInstance]],
        instances: Sequence[OllamaInstance],
        req: RouteRequest,
        now: float,
        degraded: bool,
    ) -> Route:
        if not req.allow_cold and self._hot_replica_full(free, instances, req, now):
            # A slot on an instance with the model loaded frees in about one service time;
            # loading it elsewhere takes seconds and evicts what was loaded there.
            return Route(None, candidates=len(free), saturated=True, reason="hot replica full")
        return self._finish(free, req, now, len(instances), panic=False, degraded=degraded)

    def _hot_replica_full(
        self,
        free: list[tuple[int, OllamaInstance]],
        instances: Sequence[OllamaInstance],
        req: RouteRequest,
        now: float,
    ) -> bool:
        """No free candidate has the model loaded, but a routable full one does."""
        model = req.model
        if model is None:
            return False
        for _, inst in free:
            until = inst.loaded_models.get(model)
            if until is not None and until > now:
                return False
        for _, inst in self._static_candidates(instances, req):
            until = inst.loaded_models.get(model)
            if until is not None and until > now and inst.routable(now) and not inst.admits(model):
                return True
        return False

    def _select_slow(self, instances: Sequence[OllamaInstance], req: RouteRequest, now: float) -> Route:
        eligible: list[tuple[int, OllamaInstance]] = []
        excluded: list[tuple[int, OllamaInstance]] = []
        counts = {"removed": 0, "tags": 0, "model": 0}
        for position, inst in enumerate(instances):
            if inst.removed:
                counts["removed"] += 1
            elif req.tags and not req.tags <= inst.tags:
                counts["tags"] += 1
            elif req.model is not None and not inst.may_serve(req.model, req.spelling):
                counts["model"] += 1
            elif req.exclude and inst.id in req.exclude:
                excluded.append((position, inst))
            else:
                eligible.append((position, inst))
        fell_back = not eligible
        if fell_back:
            # A retry goes back to an instance already tried only when nothing else exists.
            eligible = excluded
        if not eligible:
            return Route(None, reason=self._why_none(instances, counts, req))

        routable = [(p, i) for p, i in eligible if i.routable(now)]
        if not routable and not fell_back and req.require_healthy:
            # The untried instances are all down: a healthy instance already tried in this call
            # beats a dead one. Panic routing is for a pool with nothing routable at all.
            again = [(p, i) for p, i in excluded if i.routable(now)]
            if again:
                eligible, routable, fell_back = again, again, True
        panic = not routable
        if not req.require_healthy:
            routable = eligible
        elif panic:
            # Nothing healthy: try anyway rather than fail everything, least recently failed first.
            routable = sorted(eligible, key=lambda pi: pi[1].metrics.last_failure_at or 0.0)[:1]

        free = [(p, i) for p, i in routable if i.admits(req.model) and i.busy_until <= now]
        if not free:
            return Route(None, candidates=len(routable), saturated=True, panic=panic, reason="all full")
        tier = min(i.priority for _, i in free)
        free = [(p, i) for p, i in free if i.priority == tier]
        degraded = any(i.state is InstanceState.DEGRADED for _, i in free)
        if req.require_healthy and not panic and not fell_back:
            return self._decide(free, instances, req, now, degraded)
        return self._finish(free, req, now, len(instances), panic, degraded)

    def _finish(
        self,
        free: list[tuple[int, OllamaInstance]],
        req: RouteRequest,
        now: float,
        size: int,
        panic: bool,
        degraded: bool,
    ) -> Route:
        """The last soft filters (max_latency, degraded) and the strategy's pick."""
        if req.max_latency is not None:
            fast = [
                (p, i)
                for p, i in free
                if (est := i.latency_estimate(now, self.expected_tokens)) is None or est <= req.max_latency
            ]
            free = fast or free

        if degraded:
            # Degraded instances only take overflow, except one whose breaker wants a probe
            # request: recovery is proven with real traffic, so it gets the next requests (up to
            # its half_open_requests; a strategy favouring faster instances would starve it).
            probing = [
                (p, i)
                for p, i in free
                if i.state is InstanceState.DEGRADED and i.breaker.state_at(now) is CircuitState.HALF_OPEN
            ]
            free = probing or [(p, i) for p, i in free if i.state is not InstanceState.DEGRADED] or free

        chosen = self._pick(free, req, now, size)
        if req.prefix is not None and req.strategy == "cache_aware":
            self.cache_slots.record(chosen.id, req.model, req.prefix.blocks, chosen.max_concurrent, now)
        # "panic" tells the caller to bypass the breaker: nothing routable was chosen on purpose.
        return Route(chosen, candidates=len(free), panic=panic or not chosen.routable(now))

    def _pick(
        self, free: list[tuple[int, OllamaInstance]], req: RouteRequest, now: float, size: int
    ) -> OllamaInstance:
        if len(free) == 1:
            position, inst = free[0]
            if req.strategy == "round_robin":
                self._rr_cursor = position + 1
            return inst
        if req.session is not None or req.prefix is not None:
            return self._pick_affine([inst for _, inst in free], req, now)
        if req.strategy == "round_robin":
            cursor = self._rr_cursor
            position, inst = min(free, key=lambda pi: (pi[0] - cursor) % size)
            self._rr_cursor = position + 1
            return inst
        if req.strategy == "weighted":
            return self._rng.choices([i for _, i in free], weights=[i.weight for _, i in free])[0]
        strategy = self.prefix_fallback if req.strategy == "cache_aware" else req.strategy
        candidates = [inst for _, inst in free]
        scores = SCORERS.get(strategy, _least_loaded)(candidates, req, now, self.expected_tokens)
        lowest = min(scores) + _TIE
        best = [inst for inst, score in zip(candidates, scores, strict=True) if score <= lowest]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _lowest(
        self,
        candidates: list[OllamaInstance],
        req: RouteRequest,
        now: float,
        strategy: str,
        bonus: list[float] | None = None,
    ) -> OllamaInstance:
        """The candidate with the lowest score of ``strategy`` (random tie-break); ``bonus``, in
        units of the highest score, is taken off each (the prefix term)."""
        scores = SCORERS.get(strategy, _least_loaded)(candidates, req, now, self.expected_tokens)
        if bonus is not None:
            top = max(scores)
            scale = 1.0 / top if top > 0 else 1.0
            scores = [s * scale - b for s, b in zip(scores, bonus, strict=True)]
        lowest = min(scores) + _TIE
        best = [inst for inst, score in zip(candidates, scores, strict=True) if score <= lowest]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _pick_affine(self, candidates: list[OllamaInstance], req: RouteRequest, now: float) -> OllamaInstance:
        """Session or prefix affinity among the instances within the bounded share of the load."""
        within = within_bound(candidates, self.balance_epsilon)
        session = req.session
        if session is not None:
            return max(within, key=lambda inst: rendezvous(session, inst.id))
        prefix = req.prefix
        assert prefix is not None
        index, model = self.prefix_index, req.model
        matched = [index.matched(inst.id, model, prefix) for inst in within]
        total = len(prefix.blocks)
        if req.strategy != "cache_aware":  # the prefix as a score term of another strategy
            weight = self.prefix_weight
            return self._lowest(within, req, now, req.strategy, [weight * m / total for m in matched])
        best = max(matched)
        if best >= MATCH_THRESHOLD * total:
            within = [inst for inst, m in zip(within, matched, strict=True) if m == best]
            return self._lowest(within, req, now, self.prefix_fallback)
        # Nothing matches: explore, and among equals prefer the instance whose least recently
        # used cache slot is oldest (an unused slot first), so the new prompt evicts the
        # conversation least likely to come back; among unused slots, the instance that caches
        # least (SGLang's smallest tree).
        slots = self.cache_slots
        ages = [slots.oldest_use(inst.id, model, inst.max_concurrent) for inst in within]
        sizes = [index.size(inst.id, model) for inst in within]
        newest, oldest = max(ages), min(ages)
        span = newest - oldest if math.isfinite(oldest) and newest > oldest else math.inf
        most = max(sizes) or 1
        bonus = [
            _TIE_BREAK * ((newest - age) / span if math.isfinite(age) else 1.0 + 1e-3 * (1 - size / most))
            for age, size in zip(ages, sizes, strict=True)
        ]
        return self._lowest(within, req, now, self.prefix_fallback, bonus)

    @staticmethod
    def _why_none(instances: Sequence[OllamaInstance], counts: dict[str, int], req: RouteRequest) -> str:
        total = len(instances)
        if total == 0 or counts["removed"] == total:
            return "the pool has no instances"

        def instances_that(n: int, singular: str, plural: str) -> str:
            return f"{n} instance {singular}" if n == 1 else f"{n} instances {plural}"

        parts = []
        if counts["tags"]:
            parts.append(instances_that(counts["tags"], "lacks", "lack") + f" the tags {sorted(req.tags)}")
        if counts["model"]:
            known = sorted({m for i in instances for m in (i.installed_models or i.configured_models)})
            where = (
                f" (models known: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})" if known else ""
            )
            parts.append(
                instances_that(counts["model"], "does not have", "do not have")
                + f" model {req.spelling or req.model!r}{where}"
            )
        if counts["removed"]:
            parts.append(instances_that(counts["removed"], "was", "were") + " removed")
        return f"no instance can serve this request: {', '.join(parts)}"
