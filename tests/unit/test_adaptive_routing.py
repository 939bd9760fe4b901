"""The manager with learned concurrency limits, without sockets: routing, the slot grant, waking
waiters, the status, and the default (off) that changes nothing."""

from __future__ import annotations

import threading

import pytest

from gleitzeit_llm import PoolSaturatedError
from gleitzeit_llm.manager import Lease, OllamaPoolManager

MODEL = "llama3.2:latest"


def manager(n: int = 2, adaptive: bool = True, **lb: object) -> OllamaPoolManager:
    instances = [
        {"id": f"i{k}", "url": f"http://127.0.0.1:{20000 + k}", "max_concurrent": 8} for k in range(n)
    ]
    return OllamaPoolManager(
        instances=instances, health_checks=False, load_balancing={"adaptive_concurrency": adaptive, **lb}
    )


def take(pool: OllamaPoolManager, model: str = "llama3.2", **kwargs: object) -> Lease:
    lease = pool.try_acquire(pool.route_request(model, **kwargs))  # type: ignore[arg-type]
    assert isinstance(lease, Lease), lease
    return lease


def finish(pool: OllamaPoolManager, lease: Lease, queue: float) -> None:
    pool.finish(lease, None, output_tokens=5, queue_time=queue, service_time=1.0)


def test_off_by_default_and_then_nothing_is_learned() -> None:
    pool = OllamaPoolManager(instances=["http://127.0.0.1:20000"], health_checks=False)
    assert not pool.config.load_balancing.adaptive_concurrency
    lease = take(pool)
    finish(pool, lease, queue=5.0)
    (info,) = pool.status()["instances"].values()
    assert info["concurrency_limits"] is None


def test_a_queued_answer_sets_the_models_limit_and_routing_respects_it() -> None:
    pool = manager(n=1)
    leases = [take(pool) for _ in range(3)]
    finish(pool, leases[0], queue=0.0)
    finish(pool, leases[1], queue=1.0)  # the second of two waited one service time: 2 x 1/2
    assert pool.status()["instances"]["i0"]["concurrency_limits"] == {MODEL: 1}
    # one still in flight (sent under the old limit): the model is at its limit of 1
    route = pool.try_acquire(pool.route_request("llama3.2"))
    assert not isinstance(route, Lease) and route.saturated
    other = take(pool, "qwen3")  # another model has nothing learned: only max_concurrent holds
    finish(pool, leases[2], queue=2.0)  # old: not counted again
    again = take(pool)
    assert pool.status()["instances"]["i0"]["concurrency_limits"] == {MODEL: 1}
    for lease in (other, again):
        pool.finish(lease, None)


def test_a_call_goes_to_another_instance_when_one_is_at_its_learned_limit() -> None:
    pool = manager(n=2, strategy="round_robin")
    first, second = take(pool), take(pool)
    assert {first.instance_id, second.instance_id} == {"i0", "i1"}
    on_i0 = first if first.instance_id == "i0" else second
    extra = take(pool, exclude=["i1"])
    finish(pool, on_i0, queue=0.0)
    finish(pool, extra, queue=1.0)  # i0 runs one at a time
    assert pool.status()["instances"]["i0"]["concurrency_limits"] == {MODEL: 1}
    hold = take(pool, exclude=["i1"])  # i0's one slot
    assert [take(pool).instance_id for _ in range(3)] == ["i1"] * 3  # i0 is full for this model
    assert pool.status()["instances"]["i0"]["active_requests"] == 1
    pool.finish(hold, None)


def test_a_raised_limit_hands_out_its_new_slot_at_once() -> None:
    pool = manager(n=1, queue_timeout=5)
    a, b = take(pool), take(pool)
    finish(pool, a, queue=0.0)
    finish(pool, b, queue=1.0)  # limit 1 (ceiling 2)
    hold = take(pool)
    served: list[Lease] = []

    def wait_for_a_slot() -> None:
        served.append(pool.acquire_sync(pool.route_request("llama3.2"), timeout=5))

    waiters = [threading.Thread(target=wait_for_a_slot) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    try:
        while pool.status()["waiting_requests"] < 2:
            assert all(w.is_alive() for w in waiters)
            threading.Event().wait(0.001)
        pool.instances[0].limits[MODEL].ceiling = None  # type: ignore[index]  # no probe wait
        # One release frees one slot; the clean answer at the limit raises it to 2: both waiters
        # get a slot now (a plain release would hand out one).
        finish(pool, hold, queue=0.0)
        for waiter in waiters:
            waiter.join(5)
        assert len(served) == 2
        assert pool.status()["instances"]["i0"]["concurrency_limits"] == {MODEL: 2}
    finally:
        for lease in served:
            pool.finish(lease, None)


def test_saturation_names_the_learned_limit() -> None:
    pool = manager(n=1, queue_timeout=0)
    a, b = take(pool), take(pool)
    finish(pool, a, queue=0.0)
    finish(pool, b, queue=1.0)
    hold = take(pool)
    with pytest.raises(PoolSaturatedError, match="max_concurrent or learned concurrency limit"):
        pool.acquire_sync(pool.route_request("llama3.2"))
    pool.finish(hold, None)


def test_the_option_from_yaml_and_from_the_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gleitzeit_llm.config import PoolConfig

    path = tmp_path / "pool.yaml"
    path.write_text("instances: [http://127.0.0.1:20000]\nload_balancing:\n  adaptive_concurrency: true\n")
    assert PoolConfig.from_yaml(path).load_balancing.adaptive_concurrency is True
    env = {
        "GLEITZEIT_OLLAMA_INSTANCES": "http://127.0.0.1:20000",
        "GLEITZEIT_OLLAMA_ADAPTIVE_CONCURRENCY": "on",
    }
    assert PoolConfig.from_env(env).load_balancing.adaptive_concurrency is True
    assert (
        PoolConfig.from_env(
            {"GLEITZEIT_OLLAMA_INSTANCES": "http://127.0.0.1:20000"}
        ).load_balancing.adaptive_concurrency
        is False
    )
