"""The filter -> score -> pick pipeline, on instance state set up without any network."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gleitzeit_llm.config import InstanceConfig
from gleitzeit_llm.routing.breaker import CircuitBreaker
from gleitzeit_llm.routing.instance import InstanceState, OllamaInstance
from gleitzeit_llm.routing.strategies import SCORERS, Router, RouteRequest

NOW = 1000.0


def instance(id: str, **kwargs: object) -> OllamaInstance:
    config = InstanceConfig(id=id, url=f"http://127.0.0.1:{10000 + len(id) + hash(id) % 1000}", **kwargs)
    return OllamaInstance(config, CircuitBreaker(clock=lambda: NOW))


def pick(router: Router, pool: list[OllamaInstance], **kwargs: object) -> OllamaInstance | None:
    return router.select(pool, RouteRequest(**kwargs), NOW).instance  # type: ignore[arg-type]


def test_round_robin_rotates_exactly() -> None:
    pool = [instance(n) for n in "abcd"]
    router = Router(random.Random(1))
    picks = [pick(router, pool, strategy="round_robin").id for _ in range(12)]  # type: ignore[union-attr]
    assert picks == list("abcd") * 3


def test_round_robin_skips_full_instances_and_keeps_order() -> None:
    pool = [instance(n, max_concurrent=1) for n in "abc"]
    router = Router(random.Random(1))
    pool[1].acquire(None)
    picks = [pick(router, pool, strategy="round_robin").id for _ in range(4)]  # type: ignore[union-attr]
    assert picks == ["a", "c", "a", "c"]


def test_weighted_converges_to_the_weights() -> None:
    pool = [instance("a", weight=3.0), instance("b", weight=1.0), instance("c", weight=1.0)]
    router = Router(random.Random(7))
    counts = Counter(pick(router, pool, strategy="weighted").id for _ in range(10_000))  # type: ignore[union-attr]
    assert abs(counts["a"] / 10_000 - 0.6) < 0.03
    assert abs(counts["b"] / 10_000 - 0.2) < 0.03


def test_least_loaded_prefers_lower_utilisation() -> None:
    pool = [instance("a", max_concurrent=4), instance("b", max_concurrent=4)]
    pool[0].acquire(None)
    assert pick(Router(), pool).id == "b"  # type: ignore[union-attr]


def test_least_loaded_breaks_ties_at_random() -> None:
    pool = [instance(n) for n in "abcd"]
    router = Router(random.Random(3))
    counts = Counter(pick(router, pool).id for _ in range(400))  # type: ignore[union-attr]
    assert set(counts) == set("abcd")
    assert max(counts.values()) < 160


def test_tags_must_all_be_present() -> None:
    pool = [instance("cpu", tags=["cpu"]), instance("gpu", tags=["gpu", "large"])]
    router = Router()
    assert pick(router, pool, tags=frozenset({"gpu"})).id == "gpu"  # type: ignore[union-attr]
    route = router.select(pool, RouteRequest(tags=frozenset({"gpu", "tpu"})), NOW)
    assert route.instance is None and not route.saturated
    assert "lack the tags" in route.reason


def test_model_filter_uses_configured_installed_and_missing() -> None:
    pinned = instance("pinned", models=["llama3.2:70b"])
    discovered = instance("discovered")
    discovered.installed_models = frozenset({"llama3.2:latest"})
    unknown = instance("unknown")
    router = Router()
    assert pick(router, [pinned, discovered], model="llama3.2:70b").id == "pinned"  # type: ignore[union-attr]
    assert pick(router, [pinned, discovered], model="llama3.2:latest").id == "discovered"  # type: ignore[union-attr]
    unknown.missing_models.add("mistral:latest")
    route = router.select([pinned, discovered, unknown], RouteRequest(model="mistral:latest"), NOW)
    assert route.instance is None
    assert "do not have model" in route.reason


def test_unhealthy_and_open_breakers_are_skipped() -> None:
    a, b, c = instance("a"), instance("b"), instance("c")
    a.state = InstanceState.UNHEALTHY
    for _ in range(5):
        b.breaker.record_failure(NOW)
    assert pick(Router(), [a, b, c]).id == "c"  # type: ignore[union-attr]


def test_nothing_healthy_tries_anyway_least_recently_failed() -> None:
    a, b = instance("a"), instance("b")
    a.state = b.state = InstanceState.UNHEALTHY
    a.metrics.last_failure_at = NOW - 1
    b.metrics.last_failure_at = NOW - 50
    route = Router().select([a, b], RouteRequest(), NOW)
    assert route.instance is b and route.panic


def test_degraded_is_used_only_when_nothing_better_has_room() -> None:
    a, b = instance("a", max_concurrent=1), instance("b", max_concurrent=1)
    a.state = InstanceState.DEGRADED
    assert pick(Router(), [a, b]).id == "b"  # type: ignore[union-attr]
    b.acquire(None)
    assert pick(Router(), [a, b]).id == "a"  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", ["least_loaded", "latency_based", "round_robin", "weighted"])
def test_a_recovering_instance_gets_the_probe_request_before_healthy_ones(strategy: str) -> None:
    # docs/routing.md: "a degraded instance whose breaker is half-open is preferred for probe
    # requests". Without the preference a strategy that favours the healthy (or faster) ones
    # never sends it traffic, and it never proves its recovery.
    clock = [NOW - 100.0]
    a, b, c = (instance(n, max_concurrent=4) for n in "abc")
    a.breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30, clock=lambda: clock[0])
    a.breaker.record_failure(clock[0])
    a.state = InstanceState.DEGRADED  # a health check answered again
    a.metrics.ttft.observe(5.0, NOW - 100.0)  # it was slow before it failed
    router = Router(random.Random(5))
    for _ in range(20):
        assert pick(router, [a, b, c], strategy=strategy).id == "a"  # type: ignore[union-attr]


def test_a_recovering_instance_whose_probes_are_taken_gets_no_more() -> None:
    clock = [NOW - 100.0]
    a, b = instance("a"), instance("b")
    a.breaker = CircuitBreaker(
        failure_threshold=1, recovery_timeout=30, half_open_requests=1, clock=lambda: clock[0]
    )
    a.breaker.record_failure(clock[0])
    a.state = InstanceState.DEGRADED
    assert a.breaker.admit(NOW)[0]  # the one probe is out
    a.acquire(None)
    assert pick(Router(), [a, b]).id == "b"  # type: ignore[union-attr]


def test_all_full_reports_saturated() -> None:
    pool = [instance(n, max_concurrent=1) for n in "ab"]
    for inst in pool:
        inst.acquire(None)
    route = Router().select(pool, RouteRequest(), NOW)
    assert route.instance is None and route.saturated


def test_lower_priority_tier_only_when_the_higher_is_full() -> None:
    primary = instance("primary", priority=1, max_concurrent=1)
    backup = instance("backup", priority=2, max_concurrent=1)
    router = Router()
    assert pick(router, [backup, primary]).id == "primary"  # type: ignore[union-attr]
    primary.acquire(None)
    assert pick(router, [backup, primary]).id == "backup"  # type: ignore[union-attr]
    primary.release(None)
    primary.state = InstanceState.UNHEALTHY
    assert pick(router, [backup, primary]).id == "backup"  # type: ignore[union-attr]


def test_busy_instance_is_treated_as_full_until_retry_after() -> None:
    a, b = instance("a"), instance("b")
    a.busy_until = NOW + 5
    assert pick(Router(), [a, b]).id == "b"  # type: ignore[union-attr]


def test_exclusion_is_soft_when_nothing_else_is_left() -> None:
    a, b = instance("a"), instance("b")
    router = Router()
    assert pick(router, [a, b], exclude=frozenset({"a"})).id == "b"  # type: ignore[union-attr]
    assert pick(router, [a], exclude=frozenset({"a"})).id == "a"  # type: ignore[union-attr]


def test_latency_based_prefers_the_faster_and_explores_the_unmeasured() -> None:
    fast, slow, new = instance("fast"), instance("slow"), instance("new")
    fast.metrics.ttft.observe(0.1, NOW)
    slow.metrics.ttft.observe(1.0, NOW)
    router = Router()
    assert pick(router, [fast, slow], strategy="latency_based").id == "fast"  # type: ignore[union-attr]
    assert pick(router, [fast, slow, new], strategy="latency_based").id == "new"  # type: ignore[union-attr]
    new.acquire(None)  # measured nothing yet but busy: do not pile on
    assert pick(router, [fast, slow, new], strategy="latency_based").id == "fast"  # type: ignore[union-attr]


def test_latency_based_weighs_queue_length() -> None:
    fast, slow = instance("fast", max_concurrent=32), instance("slow", max_concurrent=32)
    fast.metrics.ttft.observe(0.1, NOW)
    slow.metrics.ttft.observe(0.5, NOW)
    for _ in range(5):
        fast.acquire(None)  # 0.1 * 6 > 0.5 * 1
    assert pick(Router(), [fast, slow], strategy="latency_based").id == "slow"  # type: ignore[union-attr]


def test_max_latency_prefers_instances_under_it() -> None:
    fast, slow = instance("fast"), instance("slow")
    fast.metrics.ttft.observe(0.2, NOW)
    slow.metrics.ttft.observe(3.0, NOW)
    fast.acquire(None)
    fast.acquire(None)
    fast.acquire(None)  # least_loaded alone would pick slow
    assert pick(Router(), [fast, slow], max_latency=1.0).id == "fast"  # type: ignore[union-attr]


def test_model_affinity_prefers_loaded_then_installed_then_overflows() -> None:
    hot, warm, cold = (instance(n, max_concurrent=1) for n in ("hot", "warm", "cold"))
    hot.loaded_models["llama3.2:latest"] = NOW + 60
    warm.installed_models = frozenset({"llama3.2:latest"})
    router = Router()
    assert pick(router, [cold, warm, hot], model="llama3.2:latest", strategy="model_affinity").id == "hot"  # type: ignore[union-attr]
    hot.acquire("llama3.2:latest")
    assert pick(router, [cold, warm, hot], model="llama3.2:latest", strategy="model_affinity").id == "warm"  # type: ignore[union-attr]
    hot.loaded_models["llama3.2:latest"] = NOW - 1  # expired
    hot.release("llama3.2:latest")
    assert pick(router, [cold, hot], model="llama3.2:latest", strategy="model_affinity").id in {"cold", "hot"}  # type: ignore[union-attr]


def test_model_affinity_without_cold_overflow_waits_for_the_full_hot_replica() -> None:
    hot, warm = instance("hot", max_concurrent=1), instance("warm", max_concurrent=1)
    hot.loaded_models["llama3.2:latest"] = NOW + 60
    router = Router()
    ask = {"model": "llama3.2:latest", "strategy": "model_affinity", "allow_cold": False}
    assert pick(router, [warm, hot], **ask).id == "hot"  # type: ignore[union-attr]
    hot.acquire("llama3.2:latest")
    route = router.select([warm, hot], RouteRequest(**ask), NOW)  # type: ignore[arg-type]
    assert (route.instance, route.saturated, route.reason) == (None, True, "hot replica full")
    warm.loaded_models["llama3.2:latest"] = NOW + 60  # a second hot replica with room: no wait
    assert pick(router, [warm, hot], **ask).id == "warm"  # type: ignore[union-attr]
    del warm.loaded_models["llama3.2:latest"]
    hot.state = InstanceState.UNHEALTHY  # a dead hot replica holds nobody back
    assert pick(router, [warm, hot], **ask).id == "warm"  # type: ignore[union-attr]
    hot.state = InstanceState.HEALTHY
    assert pick(router, [warm, hot], **{**ask, "allow_cold": True}).id == "warm"  # type: ignore[union-attr]
    assert pick(router, [warm, hot], model="llama3.2:latest", strategy="least_loaded").id == "warm"  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", sorted(SCORERS))
def test_every_strategy_never_picks_an_ineligible_instance(strategy: str) -> None:
    rng = random.Random(11)
    router = Router(rng)
    for _ in range(300):
        pool = [
            instance(f"i{n}", max_concurrent=2, tags=["gpu"] if rng.random() < 0.5 else []) for n in range(5)
        ]
        for inst in pool:
            for _ in range(rng.randrange(3)):
                inst.acquire(None)
            inst.state = rng.choice(list(InstanceState))
        route = router.select(pool, RouteRequest(strategy=strategy, tags=frozenset({"gpu"})), NOW)
        if route.instance is not None:
            assert "gpu" in route.instance.tags
            assert route.instance.has_capacity()
            if not route.panic:
                assert route.instance.state is not InstanceState.UNHEALTHY


def test_cached_filters_follow_invalidate() -> None:
    a, b = instance("a"), instance("b")
    pool = [a, b]
    router = Router()
    assert pick(router, pool, model="m:latest") is not None
    b.removed = True
    a.missing_models.add("m:latest")
    router.invalidate()
    route = router.select(pool, RouteRequest(model="m:latest"), NOW)
    assert route.instance is None and "1 instance does not have model" in route.reason


def test_the_routing_cache_follows_every_change_that_decides_routability() -> None:
    a, b = instance("a"), instance("b")
    pool = [a, b]
    router = Router()
    b.acquire(None)  # least_loaded prefers a while it is routable

    def chosen(now: float = NOW) -> str | None:
        route = router.select(pool, RouteRequest(), now)
        return route.instance.id if route.instance else None

    assert chosen() == "a"
    a.state = InstanceState.UNHEALTHY
    assert chosen() == "b"
    a.state = InstanceState.HEALTHY
    assert chosen() == "a"
    a.busy_until = NOW + 5  # a 503: out until then, back afterwards without any other change
    assert chosen() == "b" and chosen(NOW + 4.9) == "b"
    assert chosen(NOW + 5.1) == "a"
    for _ in range(a.breaker.failure_threshold):
        a.breaker.record_failure(NOW + 6)  # the breaker opens
    assert chosen(NOW + 6) == "b"
    assert chosen(NOW + 6 + a.breaker.open_for) == "a"  # due for its probe
    a.breaker.reset()
    a.priority = 5  # a static field: the pool calls invalidate() after changing it
    router.invalidate()
    assert chosen(NOW + 100) == "b"


def test_a_retry_returns_to_a_tried_healthy_instance_rather_than_through_an_open_breaker() -> None:
    # Panic routing is for a pool with nothing routable, not for a call that tried the only
    # healthy instance once: b's breaker is open, a answered one transient error.
    a, b = instance("a"), instance("b")
    for _ in range(5):
        b.breaker.record_failure(NOW)
    b.state = InstanceState.UNHEALTHY
    route = Router().select([a, b], RouteRequest(exclude=frozenset({"a"})), NOW)
    assert route.instance is a and not route.panic


def test_panic_only_when_nothing_in_the_pool_is_routable() -> None:
    a, b = instance("a"), instance("b")
    for inst in (a, b):
        for _ in range(5):
            inst.breaker.record_failure(NOW)
        inst.state = InstanceState.UNHEALTHY
    a.metrics.last_failure_at, b.metrics.last_failure_at = NOW - 1, NOW - 50
    route = Router().select([a, b], RouteRequest(exclude=frozenset({"a"})), NOW)
    assert route.instance is b and route.panic
