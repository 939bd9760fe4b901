"""OllamaPoolManager's bookkeeping, without sockets (health checks off)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gleitzeit_llm import (
    ConfigError,
    InstanceBusyError,
    InstanceFailedError,
    ModelNotFoundError,
    NoInstanceAvailableError,
    PoolSaturatedError,
    RequestError,
)
from gleitzeit_llm.manager import OllamaPoolManager
from gleitzeit_llm.observability.events import BreakerStateChanged, HealthStateChanged, RoutingDecision

GUIDE_FIELDS = {
    "url",
    "state",
    "active_requests",
    "total_requests",
    "avg_response_time",
    "error_rate",
    "availability",
    "models_loaded",
    "circuit_breaker_open",
}


def manager(n: int = 2, **kwargs: object) -> OllamaPoolManager:
    instances = kwargs.pop("instances", None) or [
        {"id": f"i{k}", "url": f"http://127.0.0.1:{20000 + k}", "max_concurrent": 2} for k in range(n)
    ]
    return OllamaPoolManager(instances=instances, health_checks=False, **kwargs)  # type: ignore[arg-type]


def test_guide_constructor_arguments_reach_the_config() -> None:
    pool = manager(
        strategy="round_robin",
        health_check_interval=12,
        circuit_breaker_config={"failure_threshold": 2, "recovery_timeout": 7},
    )
    lb = pool.config.load_balancing
    assert pool.strategy == "round_robin"
    assert lb.health_check_interval == 12
    assert lb.circuit_breaker.failure_threshold == 2
    assert lb.circuit_breaker.recovery_timeout == 7
    assert lb.circuit_breaker.half_open_requests == 3  # guide default kept


def test_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="round_robin"):
        manager(strategy="fastest")
    pool = manager()
    with pytest.raises(RequestError, match=r"load_balancing_strategy.*fastest.*least_loaded"):
        pool.route_request(strategy="fastest")


async def test_status_has_the_guide_fields_for_never_reached_instances() -> None:
    pool = manager(3)
    status = await pool.get_pool_status()
    assert status["total_instances"] == 3
    assert {"healthy_instances", "degraded_instances", "unhealthy_instances"} <= status.keys()
    for info in status["instances"].values():
        assert info.keys() >= GUIDE_FIELDS
        assert info["state"] == "unknown"
        assert info["avg_response_time"] == 0.0
        assert info["circuit_breaker_open"] is False


async def test_reading_status_changes_nothing() -> None:
    pool = manager(1, circuit_breaker_config={"failure_threshold": 1, "recovery_timeout": 0.001})
    url = await pool.get_instance()
    await pool.record_failure(url, InstanceFailedError("boom"))
    events: list[object] = []
    pool.events.subscribe(events.append)
    before = pool.get("i0").breaker._state
    for _ in range(3):
        await pool.get_pool_status()
    assert pool.get("i0").breaker._state is before
    assert events == []


async def test_get_instance_reserves_and_record_releases() -> None:
    pool = manager(1)
    url = await pool.get_instance(model="llama3.2")
    inst = pool.get("i0")
    assert inst.in_flight == 1 and inst.in_flight_by_model == {"llama3.2:latest": 1}
    await pool.record_success(url, response_time=1.5)
    assert inst.in_flight == 0 and inst.in_flight_by_model == {}
    info = pool.status()["instances"]["i0"]
    assert info["total_requests"] == 1 and info["avg_response_time"] == 1.5


async def test_record_without_get_instance_is_an_error() -> None:
    pool = manager(1)
    with pytest.raises(RuntimeError, match="without a matching get_instance"):
        await pool.record_success("http://127.0.0.1:20000")
    with pytest.raises(KeyError):
        await pool.record_success("http://127.0.0.1:1")


async def test_lease_always_releases_and_counts_failures() -> None:
    pool = manager(1)
    with pytest.raises(InstanceFailedError):
        async with pool.lease():
            raise InstanceFailedError("down")
    inst = pool.get("i0")
    assert inst.in_flight == 0
    assert inst.metrics.failed_requests == 1


async def test_caller_errors_busy_and_missing_models_do_not_trip_the_breaker() -> None:
    pool = manager(1, circuit_breaker_config={"failure_threshold": 1})
    for error in (RequestError("bad"), InstanceBusyError("busy"), ModelNotFoundError("nope", model="x")):
        with pytest.raises(type(error)):
            async with pool.lease(model="x"):
                raise error
    inst = pool.get("i0")
    assert inst.breaker.consecutive_failures == 0
    assert not inst.breaker.is_open
    assert "x:latest" in inst.missing_models
    assert inst.metrics.busy_rejections == 1


async def test_breaker_trip_marks_unhealthy_and_emits_events() -> None:
    pool = manager(2, circuit_breaker_config={"failure_threshold": 2})
    events: list[object] = []
    pool.events.subscribe(events.append)
    target = pool.get("i0")
    for _ in range(2):
        lease = pool.try_acquire(pool.route_request(exclude=["i1"]))
        assert lease.instance is target  # type: ignore[union-attr]
        pool.finish(lease, InstanceFailedError("refused"))  # type: ignore[arg-type]
    assert target.breaker.is_open
    assert target.state.value == "unhealthy"
    assert any(isinstance(e, BreakerStateChanged) and e.new == "open" for e in events)
    assert any(isinstance(e, HealthStateChanged) and e.new == "unhealthy" for e in events)
    assert any(isinstance(e, RoutingDecision) for e in events)
    # routed around it now
    for _ in range(5):
        async with pool.lease() as lease:
            assert lease.instance_id == "i1"


async def test_waits_for_a_free_slot_then_gets_it() -> None:
    pool = manager(1, instances=[{"id": "only", "url": "http://127.0.0.1:20000", "max_concurrent": 1}])
    first = await pool.acquire(pool.route_request())
    waiter = asyncio.ensure_future(pool.acquire(pool.route_request(), timeout=5))
    await asyncio.sleep(0)
    assert not waiter.done()
    pool.finish(first)
    second = await asyncio.wait_for(waiter, 5)
    assert second.instance_id == "only"
    pool.finish(second)


async def test_saturation_times_out_with_a_clear_error() -> None:
    pool = manager(1, instances=[{"id": "only", "url": "http://127.0.0.1:20000", "max_concurrent": 1}])
    first = await pool.acquire(pool.route_request())
    with pytest.raises(PoolSaturatedError, match=r"saturated.*max_concurrent"):
        await pool.acquire(pool.route_request(), timeout=0.05)
    pool.finish(first)
    assert pool.get("only").in_flight == 0


def test_a_release_in_another_thread_wakes_a_sync_waiter() -> None:
    pool = manager(1, instances=[{"id": "only", "url": "http://127.0.0.1:20000", "max_concurrent": 1}])
    first = pool.acquire_sync(pool.route_request())
    got: list[str] = []
    thread = threading.Thread(
        target=lambda: got.append(pool.acquire_sync(pool.route_request(), timeout=5).instance_id)
    )
    thread.start()
    pool.finish(first)
    thread.join(5)
    assert got == ["only"]


def test_no_eligible_instance_fails_at_once_naming_the_filter() -> None:
    pool = manager(2)
    with pytest.raises(NoInstanceAvailableError, match=r"lack the tags \['gpu'\]"):
        pool.acquire_sync(pool.route_request(require_gpu=True))


def test_require_gpu_never_changes_the_callers_tags() -> None:
    pool = manager(1)
    tags = ["fast"]
    request = pool.route_request(tags=tags, require_gpu=True)
    request = pool.route_request(tags=tags, require_gpu=True)
    assert tags == ["fast"]
    assert request.tags == {"fast", "gpu"}


async def test_add_and_remove_instances_at_run_time() -> None:
    pool = manager(1)
    new_id = pool.add_instance({"id": "new", "url": "http://127.0.0.1:20099"})
    assert new_id in pool.status()["instances"]
    with pytest.raises(ConfigError, match="already exists"):
        pool.add_instance({"id": "new", "url": "http://127.0.0.1:20098"})
    lease = await pool.acquire(pool.route_request(exclude=["i0"]))
    assert lease.instance_id == "new"
    pool.remove_instance("new")
    assert "new" in pool.status()["instances"]  # draining: finishes its in-flight work
    for _ in range(10):
        async with pool.lease() as other:
            assert other.instance_id == "i0"
    pool.finish(lease)
    assert "new" not in pool.status()["instances"]


async def test_require_healthy_false_considers_unhealthy_instances() -> None:
    pool = manager(1, circuit_breaker_config={"failure_threshold": 1})
    url = await pool.get_instance()
    await pool.record_failure(url, InstanceFailedError("down"))
    assert pool.get("i0").breaker.is_open
    url = await pool.get_instance(require_healthy=False)
    assert url == "http://127.0.0.1:20000"
    await pool.record_success(url)
    assert not pool.get("i0").breaker.is_open  # it answered: back


async def test_a_model_missing_on_one_instance_is_routed_elsewhere_until_it_serves_again() -> None:
    pool = manager(2)
    first = pool.try_acquire(pool.route_request(model="phi3", exclude=["i1"]))
    pool.finish(first, ModelNotFoundError("model 'phi3' not found", model="phi3"))  # type: ignore[arg-type]
    for _ in range(6):
        async with pool.lease(model="phi3") as lease:
            assert lease.instance_id == "i1"
    # the other models still go to both
    seen = set()
    for _ in range(20):
        async with pool.lease(model="llama3.2") as lease:
            seen.add(lease.instance_id)
    assert seen == {"i0", "i1"}


async def test_a_day_long_retry_after_is_capped_and_status_says_why_and_until_when() -> None:
    now = [1000.0]
    pool = manager(1, clock=lambda: now[0], load_balancing={"max_retry_after": 60})
    lease = await pool.acquire(pool.route_request("llama3.2"))
    pool.finish(lease, InstanceBusyError("too many requests", retry_after=86400.0, status=429))
    info = pool.status()["instances"]["i0"]
    assert info["busy_for"] == 60.0
    assert "Retry-After 86400s" in info["unavailable_reason"]
    assert "capped at 60s" in info["unavailable_reason"]
    with pytest.raises(PoolSaturatedError):
        await pool.acquire(pool.route_request("llama3.2"), timeout=0)
    now[0] += 60.5
    info = pool.status()["instances"]["i0"]
    assert info["busy_for"] == 0 and info["unavailable_reason"] is None
    pool.finish(await pool.acquire(pool.route_request("llama3.2"), timeout=0))


def test_max_retry_after_is_a_setting_with_a_sane_default() -> None:
    assert manager(1).config.load_balancing.max_retry_after == 60.0
    with pytest.raises(ConfigError, match="max_retry_after"):
        manager(1, load_balancing={"max_retry_after": 0})


@pytest.mark.parametrize("spelling", ["least loaded", "Least-Loaded", " LEAST_LOADED "])
def test_a_strategy_hint_is_accepted_in_every_spelling_the_config_accepts(spelling: str) -> None:
    # `gleitzeit-llm run` pre-checks hints with LoadBalancingStrategy.parse; the pool must not
    # then reject what that check let through.
    pool = manager(1)
    assert pool.route_request("llama3.2", spelling).strategy == "least_loaded"
    assert manager(1, strategy=spelling).strategy == "least_loaded"
