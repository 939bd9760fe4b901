"""The hooks more shared facts plug into (gleitzeit_llm/state/redis/hooks.py): called at their
points, inside the store's own round trips, and their transitions acted on by the pool."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis

from gleitzeit_llm import OllamaPoolManager
from gleitzeit_llm.manager import Lease
from gleitzeit_llm.observability.events import HealthStateChanged, PoolEvent
from gleitzeit_llm.routing.health import ProbeResult
from gleitzeit_llm.routing.instance import OllamaInstance
from gleitzeit_llm.routing.learning import Change, Transitions
from gleitzeit_llm.state.redis.hooks import SharedFacts
from gleitzeit_llm.state.redis.keys import Keys

INSTANCES = [{"id": "a", "url": "http://127.0.0.1:9"}]


class Recording(SharedFacts):
    """Writes one key per release and probe, reads it back on refresh, reports a change."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.replies: list[Sequence[Any]] = []

    def on_release(self, pipe: Any, inst: Any, observation: Any, transitions: Any, wall_now: float) -> None:
        pipe.set(self.keys.key("released", inst.id), observation.outcome)

    def on_probe(self, pipe: Any, inst: Any, result: ProbeResult, wall_now: float) -> None:
        pipe.set(self.keys.key("probed", inst.id), "ok" if result.ok else "failed")

    def read(self, pipe: Any, instance_ids: Sequence[str]) -> None:
        for instance_id in instance_ids:
            pipe.get(self.keys.key("released", instance_id))

    def apply(
        self, replies: Sequence[Any], instances: Mapping[str, OllamaInstance], now: float, wall_now: float
    ) -> dict[str, Transitions]:
        self.replies.append(list(replies))
        if replies == ["success"] and not any(r == ["success"] for r in self.replies[:-1]):
            return {"a": Transitions((Change("health", "unknown", "healthy", "shared: served elsewhere"),))}
        return {}


class NeverProbe:
    def should_probe(self) -> bool:
        return False

    def close(self) -> None:
        return None


def test_facts_ride_the_store_round_trips_and_their_transitions_become_events(redis_server: Any) -> None:
    events: list[PoolEvent] = []
    with OllamaPoolManager(instances=INSTANCES, shared_state=redis_server.url, health_checks=False) as pool:
        store = pool._shared
        assert store is not None
        facts = store.facts = Recording(store.keys)
        pool.events.subscribe(events.append)
        lease = pool.try_acquire(pool.route_request("llama3.2"))
        assert isinstance(lease, Lease)
        pool.finish(lease)
        pool._apply_probe(ProbeResult("a", ok=True))

        raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
        assert raw.get(store.keys.key("released", "a")) == "success"
        assert raw.get(store.keys.key("probed", "a")) == "ok"
        store.refresh()
        assert facts.replies[-1] == ["success"]  # exactly the replies of its own reads
        assert any(
            isinstance(e, HealthStateChanged) and e.reason == "shared: served elsewhere" for e in events
        )


def test_a_process_that_is_not_elected_skips_the_health_round(redis_server: Any) -> None:
    with OllamaPoolManager(instances=INSTANCES, shared_state=redis_server.url, health_checks=False) as pool:
        assert [t.instance_id for t in pool._probe_targets()] == ["a"]
        assert pool._shared is not None
        pool._shared.election = NeverProbe()
        assert pool._probe_targets() == []
        redis_server.kill()
        pool.try_acquire(pool.route_request("llama3.2"))  # finds Redis down
        assert pool.status()["shared_state"]["up"] is False
        assert [t.instance_id for t in pool._probe_targets()] == ["a"]  # alone again: probes itself
