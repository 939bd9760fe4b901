"""The state seam's in-process store: atomic acquire/release, and what recording reports."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gleitzeit_llm import InstanceBusyError, InstanceFailedError
from gleitzeit_llm.config import InstanceConfig, LoadBalancingConfig
from gleitzeit_llm.manager import OllamaPoolManager
from gleitzeit_llm.routing.breaker import CircuitState
from gleitzeit_llm.routing.health import ProbeResult
from gleitzeit_llm.routing.instance import InstanceState, OllamaInstance
from gleitzeit_llm.routing.learning import NOTHING, Change, Observation, Outcome
from gleitzeit_llm.state import LocalState, StateStore

MODELS = [None, "a:latest", "b:latest"]


def store(**lb: object) -> LocalState:
    return LocalState(LoadBalancingConfig.model_validate(lb), clock=lambda: 0.0)


def instance(s: LocalState, cap: int = 2) -> OllamaInstance:
    return s.create(InstanceConfig(id="i0", url="http://127.0.0.1:20000", max_concurrent=cap))


def finished(outcome: str, model: str | None = None, error: BaseException | None = None, probe: bool = False):
    return Observation(outcome, model, model, probe, False, 0.1, 0.05, error=error)


def test_the_local_store_is_a_state_store() -> None:
    assert isinstance(store(), StateStore)


@settings(max_examples=200, deadline=None)
@given(cap=st.integers(1, 4), steps=st.lists(st.tuples(st.booleans(), st.sampled_from(MODELS)), max_size=60))
def test_acquire_and_release_keep_counts_between_zero_and_the_cap(
    cap: int, steps: list[tuple[bool, str | None]]
) -> None:
    s = store()
    inst = instance(s, cap)
    held: list[str | None] = []
    for take, model in steps:
        if take:
            grant = s.acquire(inst, model, 0.0, False)
            assert grant.admitted == (len(held) < cap)  # refused exactly when full
            if grant.admitted:
                held.append(model)
        elif held:
            s.release(inst, finished(Outcome.SUCCESS, held.pop(random.randrange(len(held)))), 0.0)
        assert 0 <= inst.in_flight <= cap
        assert inst.in_flight == len(held)
        assert all(n > 0 for n in inst.in_flight_by_model.values())
        assert inst.in_flight_by_model == {m: held.count(m) for m in set(held) if m is not None}


def test_a_release_without_an_acquire_never_goes_negative() -> None:
    s = store()
    inst = instance(s)
    s.release(inst, finished(Outcome.CANCELLED, "a:latest"), 0.0)
    assert inst.in_flight == 0 and inst.in_flight_by_model == {}


def test_a_half_open_breaker_admits_only_its_probe_budget() -> None:
    s = store(circuit_breaker={"failure_threshold": 1, "recovery_timeout": 1, "half_open_requests": 2})
    inst = instance(s, cap=10)
    s.acquire(inst, None, 0.0, False)
    s.release(inst, finished(Outcome.FAILURE, error=InstanceFailedError("boom")), 0.0)
    assert not s.acquire(inst, None, 0.5, False).admitted  # open
    first = s.acquire(inst, None, 1.0, False)
    assert first.admitted and first.probe
    assert first.transitions.changes == (Change("breaker", "open", "half_open", "recovery timeout elapsed"),)
    second = s.acquire(inst, None, 1.0, False)
    assert second.admitted and second.probe and second.transitions is NOTHING
    third = s.acquire(inst, None, 1.0, False)
    assert not third.admitted and third.reason == "half-open probe limit reached"
    assert s.acquire(inst, None, 1.0, True).admitted  # panic bypasses the breaker, not the cap
    assert inst.in_flight == 3


def test_a_plain_success_reports_nothing() -> None:
    s = store()
    inst = instance(s)
    inst.state = InstanceState.HEALTHY
    s.acquire(inst, "a:latest", 0.0, False)
    assert s.release(inst, finished(Outcome.SUCCESS, "a:latest"), 0.0) is NOTHING


def test_a_tripping_failure_reports_the_breaker_then_the_health_change() -> None:
    s = store(circuit_breaker={"failure_threshold": 1})
    inst = instance(s)
    inst.state = InstanceState.HEALTHY
    s.acquire(inst, None, 0.0, False)
    learned = s.release(inst, finished(Outcome.FAILURE, error=InstanceFailedError("boom")), 0.0)
    assert [(c.subject, c.old, c.new) for c in learned.changes] == [
        ("breaker", "closed", "open"),
        ("health", "healthy", "unhealthy"),
    ]
    assert learned.routing_changed and inst.breaker.state is CircuitState.OPEN


def test_a_busy_answer_reports_its_window_capped() -> None:
    s = store(max_retry_after=5)
    inst = instance(s)
    s.acquire(inst, None, 0.0, False)
    learned = s.release(inst, finished(Outcome.BUSY, error=InstanceBusyError("busy", retry_after=3600)), 10.0)
    assert learned.busy_until == 15.0 and learned.routing_changed and not learned.changes
    assert "capped at 5s" in (inst.busy_reason or "")


def test_a_probe_reports_the_health_change_and_refreshes_the_filters() -> None:
    s = store()
    inst = instance(s)
    learned = s.record_probe(inst, ProbeResult("i0", ok=True, installed=frozenset({"a:latest"})), 0.0)
    assert learned.filters_changed
    assert learned.changes == (Change("health", "unknown", "healthy", "health check passed"),)


def two_managers() -> tuple[OllamaPoolManager, OllamaPoolManager]:
    def pool() -> OllamaPoolManager:
        return OllamaPoolManager(
            instances=[{"id": "i0", "url": "http://127.0.0.1:20000"}], health_checks=False
        )

    return pool(), pool()


def test_a_change_in_one_pool_keeps_another_pools_routing_cache() -> None:
    quiet, busy = two_managers()
    request = quiet.route_request()
    for _ in range(2):  # the first success makes its instance healthy, the second caches that
        quiet.finish(quiet.try_acquire(request))
    cached = dict(quiet._router._dynamic)
    lease = busy.try_acquire(busy.route_request())
    busy.finish(lease, InstanceBusyError("busy", retry_after=1))  # moves busy's routing epoch
    quiet.finish(quiet.try_acquire(request))
    assert quiet._router._dynamic == cached  # the same entries: nothing was recomputed
    assert quiet._router._dynamic and all(
        quiet._router._dynamic[key] is entry for key, entry in cached.items()
    )


def test_an_instance_records_outcomes_and_probes_itself() -> None:
    inst = instance(store())
    learned = inst.record_probe(ProbeResult("i0", ok=False, error="refused"), 0.0)
    assert learned.changes == (Change("health", "unknown", "unhealthy", "health check failed: refused"),)
    learned = inst.record_outcome(finished(Outcome.MODEL_MISSING, "a:latest"), 0.0, 60.0)
    assert learned.model_missing and learned.filters_changed and "a:latest" in inst.missing_models
