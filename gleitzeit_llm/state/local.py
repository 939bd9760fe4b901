"""The in-process state store: the handles are the state, and the pool's lock makes each call atomic."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gleitzeit_llm.routing.breaker import CircuitBreaker, CircuitState
from gleitzeit_llm.routing.concurrency import ModelLimits
from gleitzeit_llm.routing.epoch import Epoch
from gleitzeit_llm.routing.instance import OllamaInstance
from gleitzeit_llm.routing.learning import NOTHING, Transitions, breaker_change, record_outcome
from gleitzeit_llm.state.base import FULL, GRANTED, PROBES_TAKEN, Grant

if TYPE_CHECKING:
    from gleitzeit_llm.config import InstanceConfig, LoadBalancingConfig
    from gleitzeit_llm.routing.health import ProbeResult
    from gleitzeit_llm.routing.learning import Observation

__all__ = ["LocalState"]

_CLOSED = CircuitState.CLOSED


class LocalState:
    """:class:`~gleitzeit_llm.state.base.StateStore` in this process.

    Not thread-safe by itself: the manager calls it under its lock, the one lock that also
    guards its queue and router (one acquisition per call on the hot path, not two).

    >>> from gleitzeit_llm.config import InstanceConfig, LoadBalancingConfig
    >>> store = LocalState(LoadBalancingConfig())
    >>> inst = store.create(InstanceConfig(id="a", url="http://127.0.0.1:11434", max_concurrent=1))
    >>> [store.acquire(inst, None, 0.0, False).admitted for _ in range(2)]
    [True, False]
    """

    def __init__(
        self, load_balancing: LoadBalancingConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.epoch = Epoch()
        self._breaker = load_balancing.circuit_breaker
        self._max_retry_after = load_balancing.max_retry_after
        self._adaptive = load_balancing.adaptive_concurrency
        self._clock = clock

    def create(self, config: InstanceConfig) -> OllamaInstance:
        cb = self._breaker
        breaker = CircuitBreaker(
            cb.failure_threshold,
            cb.recovery_timeout,
            cb.half_open_requests,
            cb.max_recovery_timeout,
            clock=self._clock,
            epoch=self.epoch,
        )
        inst = OllamaInstance(config, breaker, self.epoch)
        if self._adaptive:
            inst.limits = ModelLimits(inst.max_concurrent)
        return inst

    def acquire(self, inst: OllamaInstance, model: str | None, now: float, panic: bool) -> Grant:
        if inst.in_flight >= inst.max_concurrent:
            return FULL  # the router filtered on capacity under the same lock: the cap is a guard
        limits = inst.limits
        if limits is not None and not limits.admits(model, inst.in_flight_by_model):
            return FULL  # the learned limit of this model (adaptive_concurrency)
        breaker = inst.breaker
        if panic or breaker.state_at(now) is _CLOSED:
            inst.acquire(model)
            return GRANTED
        admitted, moved = breaker.admit(now)
        transitions = Transitions((breaker_change(moved),)) if moved is not None else NOTHING
        if not admitted:
            return PROBES_TAKEN if moved is None else PROBES_TAKEN._replace(transitions=transitions)
        inst.acquire(model)
        return Grant(True, True, transitions)

    def release(self, inst: OllamaInstance, obs: Observation, now: float) -> Transitions:
        inst.release(obs.model)
        # The rules of OllamaInstance.record_outcome, called directly: one call less per request.
        return record_outcome(inst, obs, now, self._max_retry_after)

    def record_probe(self, inst: OllamaInstance, result: ProbeResult, now: float) -> Transitions:
        return inst.record_probe(result, now)

    def should_probe(self) -> bool:
        return True

    def wait_starts(self) -> bool:
        return False  # a release wakes this process's queue directly

    def own_in_flight(self, inst: OllamaInstance) -> int:
        return inst.in_flight
