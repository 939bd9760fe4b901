"""OllamaPoolManager: which instance serves a request, and what the pool has learned.

The manager owns the instances and the background health monitor, and coordinates: it holds the
lock, calls the router, queues waiters (:mod:`gleitzeit_llm.queue`) and emits events. What the
pool knows about each instance (in-flight counts, breakers, health, latency, residency) lives
behind its state store (:mod:`gleitzeit_llm.state`), whose rules
(:mod:`gleitzeit_llm.routing.learning`) report the transitions the manager acts on.

It does no request I/O itself: callers (the provider, or users following the guide) reserve a
slot with :meth:`OllamaPoolManager.get_instance` or :meth:`OllamaPoolManager.lease`, talk to the
instance, and report back. One manager serves sync and async callers, from any thread and any
event loop, at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.blocking import refuse_on_loop_thread
from gleitzeit_llm.config import InstanceConfig, LoadBalancingStrategy, PoolConfig
from gleitzeit_llm.errors import (
    ConfigError,
    NoInstanceAvailableError,
    PoolSaturatedError,
    RequestError,
)
from gleitzeit_llm.guide_api import GuideApi, url_key
from gleitzeit_llm.hints import RoutingHints
from gleitzeit_llm.lifecycle import Lifecycle
from gleitzeit_llm.observability.events import (
    BreakerStateChanged,
    EventBus,
    HealthStateChanged,
    InstanceAdded,
    InstanceRemoved,
    PoolEvent,
    RequestFinished,
    RoutingDecision,
)
from gleitzeit_llm.ollama.names import model_key, spelling_key
from gleitzeit_llm.queue import SlotQueue, Waiter
from gleitzeit_llm.routing.health import HealthMonitor, ProbeResult, ProbeTarget
from gleitzeit_llm.routing.instance import InstanceState, OllamaInstance
from gleitzeit_llm.routing.learning import NOTHING, Observation, Outcome, Transitions, classify
from gleitzeit_llm.routing.prefix import PromptPrefix, capacity_blocks
from gleitzeit_llm.routing.strategies import Route, Router, RouteRequest
from gleitzeit_llm.state.base import GRANTED, StateStore
from gleitzeit_llm.state.local import LocalState

if TYPE_CHECKING:
    from gleitzeit_llm.ollama import AsyncOllamaTransport, OllamaTransport
    from gleitzeit_llm.state.redis.store import RedisState

__all__ = ["Lease", "OllamaPoolManager", "Outcome"]

_log = logging.getLogger("gleitzeit_llm.health")
# Strategies whose pick is no score (a rotation, a weighted draw): no prefix term for them.
_OWN_PICK = frozenset({"round_robin", "weighted"})


@dataclass(eq=False, slots=True)  # slots: one is built per attempt and read throughout it
class Lease:
    """A reserved slot on one instance. Finish it exactly once (the manager ignores repeats)."""

    instance: OllamaInstance
    model: str | None
    started: float
    attempt: int = 1
    probe: bool = False
    panic: bool = False
    finished: bool = False
    first_chunk_at: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    spelling: str | None = None  # spelling_key of the name routed (model is its model_key)
    prompt_estimate: int | None = None  # the prompt's estimated tokens, when it was hashed
    # adaptive concurrency: requests of its model in flight on its instance once it took the slot
    sent_with: int = 0

    @property
    def url(self) -> str:
        """The URL to send the request to (as configured, credentials included)."""
        return self.instance.connect_url

    @property
    def instance_id(self) -> str:
        return self.instance.id

    def mark_first_chunk(self, now: float | None = None) -> None:
        if self.first_chunk_at is None:
            self.first_chunk_at = time.monotonic() if now is None else now


def _build_config(
    instances: Sequence[Mapping[str, Any] | InstanceConfig | str] | None,
    strategy: str | LoadBalancingStrategy | None,
    health_check_interval: float | None,
    circuit_breaker_config: Mapping[str, Any] | None,
    load_balancing: Mapping[str, Any] | None,
    config: PoolConfig | Mapping[str, Any] | str | None,
    shared_state: Mapping[str, Any] | str | None = None,
) -> PoolConfig:
    if config is not None and instances is not None:
        raise ConfigError("give either instances=... or config=..., not both", field="instances")
    if config is None and instances is None:
        loaded = PoolConfig.load(None)
        return loaded if shared_state is None else loaded.model_copy(update={"shared_state": shared_state})
    base = PoolConfig.load(config) if config is not None else None
    data: dict[str, Any] = (
        base.model_dump(exclude_unset=True) if base is not None else {"instances": list(instances or [])}
    )
    if instances is not None:
        data["instances"] = [i.model_dump() if isinstance(i, InstanceConfig) else i for i in instances]
    lb = dict(data.get("load_balancing") or {})
    lb.update(load_balancing or {})
    if strategy is not None:
        lb["strategy"] = strategy
    if health_check_interval is not None:
        lb["health_check_interval"] = health_check_interval
    if circuit_breaker_config:
        lb["circuit_breaker"] = {**dict(lb.get("circuit_breaker") or {}), **dict(circuit_breaker_config)}
    data["load_balancing"] = lb
    if shared_state is not None:
        data["shared_state"] = shared_state
    return PoolConfig.from_dict(data)


class OllamaPoolManager(GuideApi, Lifecycle):
    """Routes requests over a pool of Ollama instances and keeps their state.

    The guide's form::

        pool = OllamaPoolManager(
            instances=[{"id": "gpu", "url": "http://gpu:11434", "tags": ["gpu"]},
                       {"id": "cpu", "url": "http://cpu:11434"}],
            strategy="least_loaded",
            health_check_interval=30,
            circuit_breaker_config={"failure_threshold": 5, "recovery_timeout": 60},
        )
        await pool.initialize()
        url = await pool.get_instance(model="llama3.2", tags=["gpu"])
        ...  # talk to url
        await pool.record_success(url, response_time=1.5)

    ``async with pool.lease(model=...) as lease:`` is the form that always releases the slot.

    The manager coordinates: it holds the lock, calls the router, queues waiters and emits
    events. What the pool knows about each instance lives behind its state store
    (:mod:`gleitzeit_llm.state`), which applies the learning rules and reports the transitions.
    """

    def __init__(
        self,
        instances: Sequence[Mapping[str, Any] | InstanceConfig | str] | None = None,
        strategy: str | LoadBalancingStrategy | None = None,
        health_check_interval: float | None = None,
        circuit_breaker_config: Mapping[str, Any] | None = None,
        *,
        load_balancing: Mapping[str, Any] | None = None,
        config: PoolConfig | Mapping[str, Any] | str | None = None,
        events: EventBus | None = None,
        health_checks: bool = True,
        clock: Any = time.monotonic,
        rng: Any = None,
        shared_state: Mapping[str, Any] | str | None = None,
    ) -> None:
        self.config = _build_config(
            instances,
            strategy,
            health_check_interval,
            circuit_breaker_config,
            load_balancing,
            config,
            shared_state,
        )
        lb = self.config.load_balancing
        self.strategy: str = _strategy_name(lb.strategy)
        self.events = events or EventBus()
        self._clock = clock
        self._lock = threading.RLock()
        self._state: StateStore
        # Shared through Redis (docs/scale-out.md) only when configured: without it the redis
        # package is never imported.
        self._shared: RedisState | None = None
        if self.config.shared_state is None:
            self._state = LocalState(lb, clock)
        else:
            from gleitzeit_llm.state.redis import open_shared_state

            self._state = self._shared = open_shared_state(self.config, clock)
            self._shared.bind(
                self._lock,
                lambda: self._instances,
                self._apply,
                self._wake_waiters,
                lambda: bool(self._queue),
            )
        self._router = Router(rng, self._state.epoch, limited=lb.adaptive_concurrency)
        if self._shared is not None:  # recorded here, written and merged by the shared store
            self._router.prefix_index = self._shared.prefix_index
        self._router.balance_epsilon = lb.balance_epsilon
        self._router.prefix_weight = lb.prefix_weight
        self._router.prefix_fallback = lb.prefix_fallback.value
        #: Whether calls of a scoring strategy other than cache_aware hash their prompt.
        self.prefix_term = lb.prefix_weight > 0
        self._instances: list[OllamaInstance] = []
        self._by_id: dict[str, OllamaInstance] = {}
        self._by_url: dict[str, OllamaInstance] = {}
        self._guide_leases: dict[str, deque[Lease]] = {}
        self._queue = SlotQueue()
        # Wakes the queue when a busy mark or an open breaker runs out (no release announces it).
        self._timer: threading.Timer | None = None
        self._timer_due = math.inf
        self._health_checks = health_checks
        self._monitor = HealthMonitor(
            self._probe_targets,
            self._apply_probe,
            interval=lb.health_check_interval,
            timeout=lb.health_check_timeout,
        )
        self._started = False
        self._closed = False
        for inst_config in self.config.instances:
            self._add(inst_config)

    # -- lifecycle ----------------------------------------------------------------------------

    async def initialize(
        self, transport_for: Callable[[ProbeTarget], Awaitable[AsyncOllamaTransport]] | None = None
    ) -> None:
        """Start background health checks and run a first probe round (idempotent).

        With ``transport_for`` (the provider's transports on the running loop) the round runs
        here through those transports, every time it is given, so their connections stay open
        for the first calls; without it the first start probes on the monitor's own loop.
        """
        first = self._start()
        if transport_for is not None and self._health_checks:
            await self._monitor.round_with(transport_for)
        elif first:
            await self._monitor.check_now_async()

    def start(self, transport_for: Callable[[ProbeTarget], OllamaTransport] | None = None) -> None:
        """Sync twin of :meth:`initialize`."""
        first = self._start()
        if transport_for is not None and self._health_checks:
            self._monitor.round_with_sync(transport_for)
        elif first:
            self._monitor.check_now()

    def initialize_sync(self) -> None:
        """Sync twin of :meth:`initialize` (:meth:`start` without the caller's transports)."""
        self.start()

    def _start(self) -> bool:
        if self._shared is not None:
            self._shared.start()
        with self._lock:
            if self._started or not self._health_checks:
                self._started = True
                return False
            self._started = True
        self._monitor.start()
        return True

    async def close(self) -> None:
        """Stop health checks and wake every waiter (idempotent)."""
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        """Sync twin of :meth:`close`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._monitor.stop()
        if self._shared is not None:
            self._shared.close()
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._wake_waiters()

    def check_health_now(self) -> None:
        """Probe every instance now and wait for the answers (sync)."""
        self._monitor.check_now()

    async def acheck_health_now(self) -> None:
        """Probe every instance now and await the answers."""
        await self._monitor.check_now_async()

    # -- instances ----------------------------------------------------------------------------

    @property
    def instances(self) -> list[OllamaInstance]:
        """The current instances (a copy), removed ones that still drain included."""
        return list(self._instances)

    def get(self, instance_id: str) -> OllamaInstance:
        try:
            return self._by_id[instance_id]
        except KeyError:
            raise KeyError(f"no instance with id {instance_id!r}; known: {sorted(self._by_id)}") from None

    def add_instance(self, instance: Mapping[str, Any] | InstanceConfig | str) -> str:
        """Add an instance at run time; returns its id. It is probed at the next health round."""
        inst_config = instance if isinstance(instance, InstanceConfig) else _instance_config(instance)
        with self._lock:
            existing = self._by_id.get(inst_config.id)
            if existing is not None and not existing.removed:
                raise ConfigError(
                    f"instances: an instance with id {inst_config.id!r} already exists",
                    field="id",
                    value=inst_config.id,
                    hint="give the new instance another id",
                )
            if existing is not None:
                self._drop(existing)
            self._add(inst_config)
        self.events.emit(InstanceAdded(inst_config.id))
        self._wake_waiters()
        return inst_config.id

    def remove_instance(self, instance_id: str) -> None:
        """Stop routing to an instance; requests in flight there finish normally."""
        with self._lock:
            inst = self.get(instance_id)
            if inst.removed:
                return
            inst.removed = True
            self._router.invalidate()
            in_flight = self._state.own_in_flight(inst)  # this process's leases drain here
            if in_flight == 0:
                self._drop(inst)
        self.events.emit(InstanceRemoved(instance_id, in_flight))
        self._wake_waiters()

    def _add(self, inst_config: InstanceConfig) -> None:
        inst = self._state.create(inst_config)
        self._instances = [*self._instances, inst]
        self._router.invalidate()
        self._by_id[inst.id] = inst
        self._by_url[url_key(inst.url)] = inst
        self._by_url[url_key(inst.connect_url)] = inst

    def _drop(self, inst: OllamaInstance) -> None:
        self._instances = [i for i in self._instances if i is not inst]
        self._router.invalidate()
        self._router.prefix_index.forget(inst.id)
        if self._by_id.get(inst.id) is inst:
            del self._by_id[inst.id]
        for url in (inst.url, inst.connect_url):
            if self._by_url.get(url_key(url)) is inst:
                del self._by_url[url_key(url)]

    # -- routing ------------------------------------------------------------------------------

    def route_request(
        self,
        model: str | None = None,
        strategy: str | LoadBalancingStrategy | None = None,
        tags: Sequence[str] | None = None,
        *,
        require_gpu: bool = False,
        max_latency: float | None = None,
        exclude: Sequence[str] = (),
        require_healthy: bool = True,
        session_id: str | None = None,
        prefix: PromptPrefix | None = None,
    ) -> RouteRequest:
        """Validate routing hints into a :class:`RouteRequest` (raises RequestError on bad hints).

        ``max_latency`` is in milliseconds, as in the guide's workflow example. ``prefix`` is the
        prompt's (:func:`~gleitzeit_llm.routing.prefix.prompt_prefix`), for the strategies that
        use it (:meth:`wants_prefix`).
        """
        if (
            strategy is None
            and tags is None
            and max_latency is None
            and not require_gpu
            and session_id is None
        ):
            name, wanted = self.strategy, frozenset()  # no hints: nothing to check on the common call
        else:
            hints = RoutingHints.parse(
                {
                    "load_balancing_strategy": strategy,
                    "instance_tags": tags,
                    "require_gpu": require_gpu,
                    "max_latency": max_latency,
                    "session_id": session_id,
                }
            )
            name = hints.load_balancing_strategy or self.strategy
            wanted = frozenset(t.lower() for t in (hints.instance_tags or ()))
            if require_gpu:
                wanted |= {"gpu"}
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise RequestError(f"model must be a non-empty string, got {model!r}", field="model")
        return RouteRequest(
            model=model_key(model) if model else None,
            spelling=spelling_key(model) if model else None,
            strategy=name,
            tags=wanted,
            max_latency=None if max_latency is None else float(max_latency) / 1000.0,
            exclude=frozenset(exclude),
            require_healthy=require_healthy,
            allow_cold=name != "model_affinity" or self.config.load_balancing.affinity_wait <= 0,
            prefix=prefix,
            session=session_id,
        )

    def wants_prefix(self, strategy: str) -> bool:
        """Whether a call routed by ``strategy`` (a canonical name) needs its prompt's prefix:
        cache_aware, or a scoring strategy while ``load_balancing.prefix_weight`` is on."""
        return strategy == "cache_aware" or (self.prefix_term and strategy not in _OWN_PICK)

    def try_acquire(self, request: RouteRequest, *, attempt: int = 1) -> Lease | Route:
        """Reserve a slot now if one is free; otherwise return the router's reason."""
        with self._lock:
            if self._closed:
                raise NoInstanceAvailableError("the pool is closed")
            now = self._clock()
            refused: frozenset[str] = frozenset()
            why = ""
            while True:
                route = self._router.select(self._instances, request, now)
                inst = route.instance
                if inst is None or inst.id in refused:
                    return route if not refused else Route(None, saturated=True, reason=why)
                grant = self._state.acquire(inst, request.model, now, route.panic)
                if grant is GRANTED:  # the usual answer: nothing else to read
                    probe = False
                    break
                if grant.transitions is not NOTHING:
                    self._apply(inst, grant.transitions)
                if grant.admitted:
                    probe = grant.probe
                    break
                # Refused: a shared store saw the pool-wide state (full, or a breaker open in
                # another process) and its answer updated the handle; route again without it.
                refused |= {inst.id}
                why = grant.reason
                request = dataclasses.replace(request, exclude=request.exclude | refused)
            lease = Lease(
                inst,
                request.model,
                time.monotonic(),
                attempt=attempt,
                probe=probe,
                panic=route.panic,
                spelling=request.spelling,
            )
            prefix = request.prefix
            if prefix is not None:
                # What we send there is what its cache will hold: sized to its slots.
                tokens = self.config.load_balancing.prefix_cache_tokens
                capacity = capacity_blocks(inst.max_concurrent, tokens)
                self._router.prefix_index.record(inst.id, request.model, prefix, capacity)
                lease.prompt_estimate = prefix.tokens
            if inst.limits is not None:
                lease.sent_with = inst.in_flight_by_model.get(request.model or "", 0)
        if self.events.active:
            self.events.emit(
                RoutingDecision(
                    inst.id,
                    request.model,
                    request.strategy,
                    route.candidates,
                    attempt,
                    "panic: no healthy instance, trying anyway" if route.panic else "",
                )
            )
        return lease

    async def acquire(
        self,
        request: RouteRequest,
        *,
        timeout: float | None = None,
        attempt: int = 1,
        waited_before: float = 0.0,
    ) -> Lease:
        """Reserve a slot, waiting up to ``timeout`` (default: the queue timeout) while all are full.

        The wait is first come, first served (see :mod:`gleitzeit_llm.queue`). ``waited_before``
        is how long the caller already waited for slots in the same call; it only makes the
        :class:`PoolSaturatedError` message tell the whole story.
        """
        got = self._acquisition(request, timeout, attempt, waited_before, asyncio.get_running_loop())
        if isinstance(got, Lease):
            return got
        waiter, waits = got
        with contextlib.closing(waits):
            for remaining in waits:
                await asyncio.wait((waiter.future,), timeout=remaining)  # type: ignore[arg-type]
        return waiter.lease  # type: ignore[return-value]

    def acquire_sync(
        self,
        request: RouteRequest,
        *,
        timeout: float | None = None,
        attempt: int = 1,
        waited_before: float = 0.0,
    ) -> Lease:
        """Sync twin of :meth:`acquire`: blocks the calling thread while all are full.

        Refused on a thread that runs an event loop (use ``await acquire(...)`` there): blocking
        that loop would also block the task that holds the slot this call waits for.
        """
        refuse_on_loop_thread("acquire_sync(...)", "await pool.acquire(...)")
        got = self._acquisition(request, timeout, attempt, waited_before, None)
        if isinstance(got, Lease):
            return got
        waiter, waits = got
        with contextlib.closing(waits):
            for remaining in waits:
                waiter.event.wait(remaining)  # type: ignore[union-attr]
        return waiter.lease  # type: ignore[return-value]

    def _acquisition(
        self,
        request: RouteRequest,
        timeout: float | None,
        attempt: int,
        waited_before: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> Lease | tuple[Waiter, Generator[float, None, None]]:
        """Both twins of acquire: the lease now, or a place in the queue and its waiting loop."""
        limit = self.config.load_balancing.queue_timeout if timeout is None else max(timeout, 0.0)
        started = time.monotonic()
        cold_at = self._cold_overflow_at(request)
        result, waiter = self._acquire_or_wait(request, attempt, loop)
        if waiter is None:
            return result  # type: ignore[return-value]
        return waiter, self._waiting(waiter, result, started, limit, cold_at, waited_before)  # type: ignore[arg-type]

    def _waiting(
        self,
        waiter: Waiter,
        route: Route,
        started: float,
        limit: float,
        cold_at: float | None,
        waited_before: float,
    ) -> Generator[float, None, None]:
        """The waiting loop, written once for both twins: it yields how long the caller may wait
        for a wake-up (on the waiter's future or thread event; none once it was served or given
        an error) and ends when ``waiter.lease`` is set.

        Raises the waiter's error or :class:`PoolSaturatedError`; closed early (the caller was
        cancelled), it gives back its place, and a slot handed over meanwhile.
        """
        deadline = started + limit
        try:
            while True:
                until = deadline if cold_at is None else min(deadline, cold_at)
                remaining = until - time.monotonic()
                if remaining > 0 and not waiter.decided:
                    yield remaining
                lease, cold_at = self._after_wake(
                    waiter, route, deadline, cold_at, started, limit, waited_before
                )
                if lease is not None:
                    return
        except BaseException:
            self._abandon(waiter)
            raise

    def _cold_overflow_at(self, request: RouteRequest) -> float | None:
        """When a model_affinity call stops waiting for a loaded replica and may load elsewhere."""
        if request.allow_cold:
            return None
        return time.monotonic() + self.config.load_balancing.affinity_wait

    def _acquire_or_wait(
        self, request: RouteRequest, attempt: int, loop: asyncio.AbstractEventLoop | None
    ) -> tuple[Lease | Route, Waiter | None]:
        # Register the waiter under the same lock as the failed attempt: no hand-off is lost.
        woken: list[Waiter] = []
        try:
            with self._lock:
                if self._queue and not self._closed:
                    # Older waiters first: a slot that is free now (a busy mark ran out a moment
                    # ago) is theirs, not this newcomer's.
                    woken = self._queue.dispatch(self._serve)
                result = self.try_acquire(request, attempt=attempt)
                if not isinstance(result, Lease) and result.saturated and self._state.wait_starts():
                    # A shared store read the pool-wide counts afresh: a slot may have freed.
                    result = self.try_acquire(request, attempt=attempt)
                if isinstance(result, Lease):
                    return result, None
                if not result.saturated:
                    raise NoInstanceAvailableError(result.reason or "no instance can serve this request")
                waiter = Waiter(request, attempt, loop)
                self._queue.push(waiter)
                if self._timer is None:
                    self._arm_timer(self._next_unblock())
                return result, waiter
        finally:
            for other in woken:
                other.wake()

    def _after_wake(
        self,
        waiter: Waiter,
        route: Route,
        deadline: float,
        cold_at: float | None,
        started: float,
        limit: float,
        waited_before: float,
    ) -> tuple[Lease | None, float | None]:
        """After a wake-up or a timeout: the lease, an error, or keep waiting (same place)."""
        woken: list[Waiter] = []
        try:
            with self._lock:
                if waiter.lease is not None:
                    return waiter.lease, cold_at
                if waiter.error is not None:
                    raise waiter.error
                now = time.monotonic()
                if cold_at is not None and now >= cold_at:
                    # affinity_wait ran out: the call may load the model elsewhere now. It keeps
                    # its ticket; older waiters still go first.
                    self._queue.change_request(waiter, dataclasses.replace(waiter.request, allow_cold=True))
                    woken = self._queue.dispatch(self._serve)
                    if waiter.lease is not None:
                        woken.remove(waiter)
                        return waiter.lease, None
                    if waiter.error is not None:
                        woken.remove(waiter)
                        raise waiter.error
                    return None, None
                if now >= deadline:
                    self._queue.remove(waiter)
                    raise self._saturated(waiter.request, route, now - started, limit, waited_before)
                return None, cold_at
        finally:
            for other in woken:
                other.wake()

    def _serve(self, waiter: Waiter) -> Lease | Route:
        return self.try_acquire(waiter.request, attempt=waiter.attempt)

    def _abandon(self, waiter: Waiter) -> None:
        """The waiter gave up (cancelled): give back a slot that was handed to it meanwhile."""
        with self._lock:
            self._queue.remove(waiter)
            lease = waiter.lease
        if lease is not None:
            self.finish(lease, asyncio.CancelledError())

    def _saturated(
        self, request: RouteRequest, route: Route, waited: float, limit: float, waited_before: float
    ) -> PoolSaturatedError:
        model = f" for model {request.model!r}" if request.model else ""
        if waited_before > 0:
            total = round(waited_before + limit, 3)
            how_long = (
                f"for {waited:.2f}s, the rest of the call's queue timeout "
                f"({total:g}s; {waited_before:.2f}s spent waiting for earlier attempts)"
            )
        else:
            how_long = f"for the queue timeout ({limit:g}s)"
        # With adaptive concurrency the cap that held may be a learned one, which only the
        # servers' own parallelism (OLLAMA_NUM_PARALLEL) raises.
        cap = (
            "max_concurrent or learned concurrency limit"
            if self.config.load_balancing.adaptive_concurrency
            else "max_concurrent"
        )
        return PoolSaturatedError(
            f"pool saturated: all {route.candidates} eligible instance(s){model} stayed at their "
            f"{cap} {how_long}; add instances, raise max_concurrent "
            f"or load_balancing.queue_timeout"
        )

    def _wake_waiters(self, single: bool = False) -> None:
        """Hand free slots to waiters, oldest first (see :meth:`SlotQueue.dispatch`).

        ``single``: one slot was released, so the first hand-out ends the scan. After a state
        change (health, instances) every waiting request is tried. Waiters whose request can no
        longer be served at all are woken with that error; the pool closing wakes everyone.
        """
        with self._lock:
            if not self._queue:
                return
            if self._closed:
                woken = self._queue.drain()
                for waiter in woken:
                    waiter.error = NoInstanceAvailableError("the pool is closed")
            else:
                woken = self._queue.dispatch(self._serve, single=single)
                if self._queue and not single:
                    self._arm_timer(self._next_unblock())
        for waiter in woken:
            waiter.wake()

    def _next_unblock(self) -> float:
        """Clock time when the next busy mark or open breaker runs out (inf: none pending)."""
        now = self._clock()
        due = math.inf
        for inst in self._instances:
            if now < inst.busy_until < due:
                due = inst.busy_until
            retry_at = inst.breaker.retry_at()
            if retry_at is not None and now < retry_at < due:
                due = retry_at
        return due

    def _arm_timer(self, due: float) -> None:
        """Wake the queue at clock time ``due`` (unless an earlier wake-up is already set).

        Called under the lock. A busy mark running out or a breaker turning half-open frees
        capacity with no release to announce it: one timer for that exact moment, not polling.
        """
        if due >= self._timer_due or due == math.inf or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        timer = threading.Timer(max(due - self._clock(), 0.001), self._on_timer)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer, self._timer_due = None, math.inf
        self._wake_waiters()  # re-arms for the next moment if waiters remain

    # -- finishing ----------------------------------------------------------------------------

    def finish(
        self,
        lease: Lease,
        error: BaseException | None = None,
        *,
        output_tokens: int | None = None,
        prompt_tokens: int | None = None,
        cached_tokens: int | None = None,
        prompt_duration: float | None = None,
        keep_alive: float | None = None,
        cold_load: bool = False,
        response_time: float | None = None,
        eval_duration: float | None = None,
        caller_paced: bool = False,
        queue_time: float | None = None,
        service_time: float | None = None,
    ) -> str:
        """Release a lease and learn from how it ended; returns the outcome. Idempotent.

        ``eval_duration`` is the server's own generation time (seconds) for ``output_tokens``:
        the time per token is learned from it when present. ``caller_paced`` says the wall time
        after the first chunk followed the caller's reading (a stream), so without the server's
        figures no time per token is learned from it. ``prompt_tokens`` and ``cached_tokens`` are
        the server's ``prompt_eval_count`` and ``prompt_eval_cached_count``, ``prompt_duration``
        its ``prompt_eval_duration`` (seconds): the instance's prompt cache hit rate is learned
        from them. ``queue_time`` and ``service_time``: seconds the request waited inside the
        server and the server worked on it, from its durations (adaptive concurrency learns from
        them).
        """
        with self._lock:
            if lease.finished:
                return Outcome.CANCELLED
            lease.finished = True
            inst = lease.instance
            now = self._clock()
            outcome = classify(error)
            duration = response_time if response_time is not None else time.monotonic() - lease.started
            ttft = lease.first_chunk_at - lease.started if lease.first_chunk_at is not None else None
            observation = Observation(
                outcome,
                lease.model,
                lease.spelling,
                lease.probe,
                lease.panic,
                duration,
                ttft,
                output_tokens,
                eval_duration,
                caller_paced,
                keep_alive,
                cold_load,
                error,
                queue_time,
                service_time,
                lease.started,
                lease.sent_with,
            )
            learned = self._state.release(inst, observation, now)
            if output_tokens and outcome == Outcome.SUCCESS and not cold_load:
                self._router.observe_output_tokens(output_tokens)
            if prompt_tokens is not None and (cached_tokens is not None or lease.prompt_estimate):
                inst.metrics.observe_prompt_cache(
                    prompt_tokens, cached_tokens, lease.prompt_estimate, prompt_duration
                )
            if learned is not NOTHING:
                self._apply(inst, learned)
            if inst.removed and self._state.own_in_flight(inst) == 0:
                self._drop(inst)
            # A plain release frees one slot: one hand-out. A change in what is routable (health,
            # breaker, busy mark, missing model) may free or block more: every request is tried.
            changed = learned.routing_changed or inst.removed
            # Read under the lock that released the slot: a caller that queues later finds it free.
            waiting = bool(self._queue)
        if self.events.active:
            self.events.emit(
                RequestFinished(
                    inst.id,
                    lease.model,
                    outcome,
                    duration,
                    ttft=ttft,
                    prompt_tokens=prompt_tokens,
                    output_tokens=output_tokens,
                    cold_load=cold_load,
                    error_type=type(error).__name__ if error is not None else None,
                )
            )
        if waiting:
            self._wake_waiters(single=not changed)
        return outcome

    def _apply(self, inst: OllamaInstance, transitions: Transitions) -> None:
        """Act on what the state store reported: forget cached filters, ask for a health round,
        emit the changes (under the lock, so events keep the order of the changes)."""
        if transitions.filters_changed:
            self._router.invalidate()
        if transitions.probe_round:
            self._monitor.request_round()
        for change in transitions.changes:
            event = HealthStateChanged if change.subject == "health" else BreakerStateChanged
            self.events.emit(event(inst.id, change.old, change.new, change.reason))

    # -- the lease API ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(
        self,
        model: str | None = None,
        strategy: str | LoadBalancingStrategy | None = None,
        tags: Sequence[str] | None = None,
        *,
        require_gpu: bool = False,
        max_latency: float | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Lease]:
        """Reserve a slot for the block; always released, counted as a failure if the block raises."""
        request = self.route_request(model, strategy, tags, require_gpu=require_gpu, max_latency=max_latency)
        with self._finishing(await self.acquire(request, timeout=timeout)) as lease:
            yield lease

    @contextlib.contextmanager
    def lease_sync(
        self,
        model: str | None = None,
        strategy: str | LoadBalancingStrategy | None = None,
        tags: Sequence[str] | None = None,
        *,
        require_gpu: bool = False,
        max_latency: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[Lease]:
        """Sync twin of :meth:`lease` (refused on a thread that runs an event loop)."""
        refuse_on_loop_thread("lease_sync(...)", "async with pool.lease(...)")
        request = self.route_request(model, strategy, tags, require_gpu=require_gpu, max_latency=max_latency)
        with self._finishing(self.acquire_sync(request, timeout=timeout)) as lease:
            yield lease

    @contextlib.contextmanager
    def _finishing(self, lease: Lease) -> Iterator[Lease]:
        """Both twins of lease: finish the lease when the block ends, as a failure if it raised
        (a cancellation counts as cancelled)."""
        try:
            yield lease
        except BaseException as exc:
            self.finish(lease, exc)
            raise
        else:
            self.finish(lease, None)

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Pool status with the guide's fields (and more). Reading it changes nothing."""
        with self._lock:
            now = self._clock()
            instances = {inst.id: inst.snapshot(now) for inst in self._instances}
        counts = {state: 0 for state in InstanceState}
        for info in instances.values():
            counts[InstanceState(info["state"])] += 1
        return {
            "total_instances": len(instances),
            "healthy_instances": counts[InstanceState.HEALTHY],
            "degraded_instances": counts[InstanceState.DEGRADED],
            "unhealthy_instances": counts[InstanceState.UNHEALTHY],
            "unknown_instances": counts[InstanceState.UNKNOWN],
            "strategy": self.strategy,
            "active_requests": sum(i["active_requests"] for i in instances.values()),
            "waiting_requests": len(self._queue),
            "instances": instances,
            **({"shared_state": self._shared.status()} if self._shared is not None else {}),
        }

    async def get_pool_status(self) -> dict[str, Any]:
        """The guide's async form of :meth:`status`."""
        return self.status()

    # -- health -------------------------------------------------------------------------------

    def _probe_targets(self) -> list[ProbeTarget]:
        if self._shared is not None and not self._shared.should_probe():
            return []  # another process probes for the whole pool
        return [
            ProbeTarget(
                i.id,
                i.connect_url,
                dict(i.config.headers),
                (i.config.verify, i.config.client_cert, i.config.client_key),
            )
            for i in self._instances
            if not i.removed
        ]

    def _apply_probe(self, result: ProbeResult) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "health_check instance=%s ok=%s latency_ms=%.1f installed=%d loaded=%s%s",
                result.instance_id,
                result.ok,
                result.latency * 1000,
                len(result.installed or ()),
                ",".join(sorted(result.loaded)) or "-",
                f" error={result.error}" if result.error else "",
            )
        with self._lock:
            inst = self._by_id.get(result.instance_id)
            if inst is None:
                return
            self._apply(inst, self._state.record_probe(inst, result, self._clock()))
        self._wake_waiters()

    def emit(self, event: PoolEvent) -> None:
        self.events.emit(event)

    def __repr__(self) -> str:
        return f"OllamaPoolManager(instances={[i.id for i in self._instances]}, strategy={self.strategy!r})"


def _instance_config(value: Mapping[str, Any] | str) -> InstanceConfig:
    return InstanceConfig.model_validate(value)  # strings follow the GLEITZEIT_OLLAMA_INSTANCES rules


def _strategy_name(value: str | LoadBalancingStrategy, field: str = "load_balancing.strategy") -> str:
    # The configured strategy: the config's parser (a ConfigError); every member has a scorer
    # (routing.strategies checks that at import). Per-call hints go through RoutingHints.parse.
    return LoadBalancingStrategy.parse(value, field=field).value
