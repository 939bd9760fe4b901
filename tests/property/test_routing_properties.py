"""Routing properties under arbitrary pool states: the router never picks an instance the
filters exclude, and weighted picks converge to the weights."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from gleitzeit_llm.config import InstanceConfig
from gleitzeit_llm.routing import CircuitBreaker, InstanceState, OllamaInstance, Router, RouteRequest
from gleitzeit_llm.routing.strategies import STRATEGY_NAMES

NOW = 1000.0

instance_state = st.fixed_dictionaries(
    {
        "max_concurrent": st.integers(1, 4),
        "in_flight": st.integers(0, 5),
        "tags": st.sets(st.sampled_from(["gpu", "cpu", "big"]), max_size=2),
        "models": st.sets(st.sampled_from(["a:latest", "b:latest"]), max_size=2),
        "missing": st.sets(st.sampled_from(["a:latest", "b:latest"]), max_size=1),
        "priority": st.integers(0, 2),
        "state": st.sampled_from(list(InstanceState)),
        "breaker_failures": st.integers(0, 6),
        "removed": st.booleans(),
        "busy": st.booleans(),
        "latency": st.none() | st.floats(0.001, 5.0),
    }
)


def build(n: int, spec: dict) -> OllamaInstance:  # type: ignore[type-arg]
    config = InstanceConfig(
        id=f"i{n}",
        url=f"http://127.0.0.1:{20000 + n}",
        max_concurrent=spec["max_concurrent"],
        tags=sorted(spec["tags"]),
        models=sorted(spec["models"]),
        priority=spec["priority"],
    )
    inst = OllamaInstance(config, CircuitBreaker(failure_threshold=3, clock=lambda: NOW))
    inst.in_flight = spec["in_flight"]
    inst.missing_models = set(spec["missing"])
    inst.state = spec["state"]
    for _ in range(spec["breaker_failures"]):
        inst.breaker.record_failure(NOW)
    inst.removed = spec["removed"]
    inst.busy_until = NOW + 1 if spec["busy"] else 0.0
    if spec["latency"] is not None:
        inst.metrics.ttft.observe(spec["latency"], NOW)
    return inst


@settings(max_examples=400, deadline=None)
@given(
    st.lists(instance_state, min_size=1, max_size=6),
    st.sampled_from(STRATEGY_NAMES),
    st.none() | st.sampled_from(["a:latest", "b:latest"]),
    st.sets(st.sampled_from(["gpu", "cpu"]), max_size=1),
    st.sets(st.integers(0, 5), max_size=2),
)
def test_the_router_never_picks_an_ineligible_instance(
    specs: list[dict],
    strategy: str,
    model: str | None,
    tags: set[str],
    tried: set[int],  # type: ignore[type-arg]
) -> None:
    pool = [build(n, spec) for n, spec in enumerate(specs)]
    request = RouteRequest(
        model=model, strategy=strategy, tags=frozenset(tags), exclude=frozenset(f"i{n}" for n in tried)
    )
    route = Router(random.Random(0)).select(pool, request, NOW)
    chosen = route.instance
    if chosen is None:
        return
    assert not chosen.removed
    assert set(tags) <= chosen.tags
    assert chosen.may_serve(model)
    assert chosen.in_flight < chosen.max_concurrent and chosen.busy_until <= NOW
    if not route.panic:
        assert chosen.state is not InstanceState.UNHEALTHY and chosen.breaker.allows(NOW)
        # nothing better was passed over: no routable free instance sits in a better tier
        better = [
            i
            for i in pool
            if i.priority < chosen.priority
            and not i.removed
            and set(tags) <= i.tags
            and i.may_serve(model)
            and i.in_flight < i.max_concurrent
            and i.busy_until <= NOW
            and i.routable(NOW)
            and i.id not in request.exclude
        ]
        assert not better
    servable = [i for i in pool if not i.removed and set(tags) <= i.tags and i.may_serve(model)]
    if chosen.id in request.exclude:
        # a tried instance only when no untried one could serve at all, or none of those is routable
        others = [i for i in servable if i.id not in request.exclude]
        assert not others or (not any(i.routable(NOW) for i in others) and not route.panic)
    if route.panic:
        # panic routing only when nothing in the pool that could serve is routable
        assert not any(i.routable(NOW) for i in servable)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.1, 10.0), min_size=2, max_size=5), st.integers(0, 2**32 - 1))
def test_weighted_picks_converge_to_the_weights(weights: list[float], seed: int) -> None:
    pool = [
        OllamaInstance(
            InstanceConfig(id=f"i{n}", url=f"http://127.0.0.1:{21000 + n}", weight=w), CircuitBreaker()
        )
        for n, w in enumerate(weights)
    ]
    router = Router(random.Random(seed))
    picks = Counter(
        router.select(pool, RouteRequest(strategy="weighted"), NOW).instance.id for _ in range(6000)
    )  # type: ignore[union-attr]
    total = sum(weights)
    for n, weight in enumerate(weights):
        assert abs(picks[f"i{n}"] / 6000 - weight / total) < 0.03
