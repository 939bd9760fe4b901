"""RedisState: the state seam shared by every process running the same pool, through Redis.

Each process keeps handles (:class:`~gleitzeit_llm.routing.instance.OllamaInstance`) for its
router, as :class:`~gleitzeit_llm.state.local.LocalState` does; what is shared lives in Redis
(:mod:`.keys`) and reaches the handles three ways: the answer of each acquire and release (one
script, one round trip each), a background refresh (one pipelined read every
``refresh_interval``) and the release announcements (:mod:`.wakeups`), which go out only while
another process has callers waiting (registered in ``waiting``, see :meth:`RedisState.wait_starts`).
On the handles,
``in_flight`` and ``in_flight_by_model`` are pool-wide counts; this process's own leases are
:attr:`RedisState.held`.

The breaker's rules stay in :mod:`gleitzeit_llm.routing.breaker`: a process whose breaker trips
(failures counted in that process) writes the open state with a wall-clock retry time in the
release's round trip; every acquire script refuses while it is open (unless panic), admits
``half_open_requests`` probes pool-wide once it is due, and the probe's outcome closes or opens
it again for all. Other processes adopt the state from the answers and the refresh.

Redis down, slow or restarted: the call that finds out runs on :class:`LocalState` rules at
once (the counts become this process's own), one warning is logged, and a background thread
tries Redis again every ``reconnect_interval``; when it answers, this process's held leases
are written back (renewal is an upsert) and sharing resumes. Calls never wait for a reconnect.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from gleitzeit_llm.routing.breaker import CircuitState
from gleitzeit_llm.routing.learning import NOTHING, Transitions, breaker_change, record_outcome
from gleitzeit_llm.routing.prefix import PrefixIndex
from gleitzeit_llm.state.base import GRANTED, PROBES_TAKEN, Grant
from gleitzeit_llm.state.local import LocalState
from gleitzeit_llm.state.redis.connection import LINK_ERRORS, Link, build_client
from gleitzeit_llm.state.redis.hooks import AlwaysProbe, NoFacts, ProbeElection, SharedFacts
from gleitzeit_llm.state.redis.keys import Keys, default_namespace
from gleitzeit_llm.state.redis.leases import HeldLeases
from gleitzeit_llm.state.redis.line import CallLine
from gleitzeit_llm.state.redis.scripts import ACQUIRE, RELEASE
from gleitzeit_llm.state.redis.wakeups import Release, Subscriber

if TYPE_CHECKING:
    from gleitzeit_llm.config import InstanceConfig, LoadBalancingConfig, SharedStateConfig
    from gleitzeit_llm.routing.breaker import CircuitBreaker
    from gleitzeit_llm.routing.breaker import Transition as BreakerTransition
    from gleitzeit_llm.routing.health import ProbeResult
    from gleitzeit_llm.routing.instance import OllamaInstance
    from gleitzeit_llm.routing.learning import Observation

__all__ = ["RedisState"]

_log = logging.getLogger("gleitzeit_llm.shared_state")

_CLOSED, _OPEN, _HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
_REFUSED = {
    "full": "all full",
    "open": "circuit breaker open (pool-wide)",
    "probes": PROBES_TAKEN.reason + " (pool-wide)",
}
# A retry time that moved less than this is the same one (ms rounding, clock reads).
_SAME_RETRY = 0.05


def _merge(learned: Transitions, change: BreakerTransition) -> Transitions:
    return Transitions(
        (*learned.changes, breaker_change(change)),
        busy_until=learned.busy_until,
        filters_changed=learned.filters_changed,
        model_missing=learned.model_missing,
        probe_round=learned.probe_round,
    )


def _set_pool_counts(inst: OllamaInstance, count: int, models: dict[str, str]) -> None:
    """The pool-wide counts read from Redis: the lease count and the ``models`` hash."""
    inst.in_flight = count
    inst.in_flight_by_model = {m: int(n) for m, n in models.items() if int(n) > 0}


def _set_counts(inst: OllamaInstance, model: str | None, count: int, model_count: int) -> None:
    inst.in_flight = count
    if model:
        if model_count > 0:
            inst.in_flight_by_model[model] = model_count
        else:
            inst.in_flight_by_model.pop(model, None)


class RedisState:
    """:class:`~gleitzeit_llm.state.base.StateStore` shared through Redis (see the module docstring).

    Called under the pool's lock, as LocalState; :meth:`bind` gives it that lock and the pool's
    callbacks, so its background threads update the handles under the same lock.
    """

    def __init__(
        self,
        config: SharedStateConfig,
        load_balancing: LoadBalancingConfig,
        instances: Sequence[InstanceConfig],
        clock: Callable[[], float] = time.monotonic,
        *,
        client: Any = None,
        facts: SharedFacts | None = None,
        election: ProbeElection | None = None,
        wall: Callable[[], float] = time.time,
        prefix_index: PrefixIndex | None = None,
    ) -> None:
        self.config = config
        self._local = LocalState(load_balancing, clock)
        self.epoch = self._local.epoch
        self._clock = clock
        self._wall = wall
        self._budget = load_balancing.circuit_breaker.half_open_requests
        self._max_retry_after = load_balancing.max_retry_after
        self.keys = Keys(config.namespace or default_namespace(instances))
        self.link = Link(config, self.keys.namespace)
        self.client = build_client(config) if client is None else client
        self.line = CallLine(self.client)  # acquire and release: called under the pool's lock
        self.held = HeldLeases()
        self.facts: SharedFacts = NoFacts(self.keys) if facts is None else facts
        self.election: ProbeElection = AlwaysProbe() if election is None else election
        #: The prompt-prefix index the pool's router uses (shared by :mod:`.prefixes` when given).
        self.prefix_index = PrefixIndex() if prefix_index is None else prefix_index
        self._ttl = config.lease_ttl
        self._ttl_ms = int(config.lease_ttl * 1000)
        self._announce = self.held.token + "\t"
        # How long a registration as waiting lasts: renewed by every refresh while callers wait,
        # so a process that died stops drawing announcements soon.
        self._waiting_ttl = min(config.lease_ttl, max(1.0, 10 * config.refresh_interval))
        self._waiting_until = 0.0  # wall clock: this process's registration in Redis lasts until then
        self._has_waiters: Callable[[], bool] = lambda: False
        # instance id -> time.monotonic() of the last script answer: a refresh read before it is older.
        self._answered: dict[str, float] = {}
        self._lock: Any = threading.RLock()
        self._instances: Callable[[], Sequence[OllamaInstance]] = list
        self._on_transitions: Callable[[OllamaInstance, Transitions], None] = lambda inst, t: None
        self._wake: Callable[[bool], None] = lambda single: None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscriber: Subscriber | None = None
        self._pid: int | None = None  # the process the threads run in (None: not started)
        self.refreshed = threading.Event()  # set after each refresh (tests wait on it)

    def bind(
        self,
        lock: Any,
        instances: Callable[[], Sequence[OllamaInstance]],
        on_transitions: Callable[[OllamaInstance, Transitions], None],
        wake: Callable[[bool], None],
        has_waiters: Callable[[], bool] = lambda: False,
    ) -> None:
        """The pool's lock, its current instances, how it acts on transitions (called under the
        lock), how it wakes its queue (``wake(single)``, called outside the lock) and whether
        callers wait in it."""
        self._lock = lock
        self._instances = instances
        self._on_transitions = on_transitions
        self._wake = wake
        self._has_waiters = has_waiters

    # -- the StateStore calls -----------------------------------------------------------------

    def create(self, config: InstanceConfig) -> OllamaInstance:
        return self._local.create(config)

    def acquire(self, inst: OllamaInstance, model: str | None, now: float, panic: bool) -> Grant:
        if self._pid != os.getpid():
            # Not started (a pool used without initialize) or a forked child (gunicorn --preload):
            # the renewal and wake-ups must run in this process, under its own token.
            self._start_here()
        member = self.held.new_member(model)
        if not self.link.is_up:
            return self._acquire_locally(inst, model, now, panic, member)
        wall = self._wall()
        args = [
            member,
            model or "",
            inst.max_concurrent,
            int((wall + self._ttl) * 1000),
            int(wall * 1000),
            1 if panic else 0,
            self._budget,
            self._ttl_ms,
            self.held.token,
            int((wall + self._waiting_ttl) * 1000),
        ]
        try:
            admitted, why, count, model_count, probe, state, retry, open_for = self.line.run(
                ACQUIRE, self.keys.scripted(inst.id), args
            )
        except LINK_ERRORS as exc:
            self.lost(exc)
            # A hung Redis runs what it was sent once it wakes: this member may yet hold a slot
            # there. Kept under the same member, it is released when Redis answers again.
            return self._acquire_locally(inst, model, now, panic, member, sent=True)
        self._answered[inst.id] = time.monotonic()
        _set_counts(inst, model, count, model_count)
        if probe:
            moved = inst.breaker.adopt(
                _HALF_OPEN, now, probe=True, reason="recovery timeout elapsed (pool-wide)"
            )
        else:
            moved = self._adopt(inst.breaker, state, retry, open_for, wall, now)
        transitions = Transitions((breaker_change(moved),)) if moved is not None else NOTHING
        if not admitted:
            if why == "full":  # the script registered this process as waiting
                self._waiting_until = wall + self._waiting_ttl
            return Grant(False, transitions=transitions, reason=_REFUSED.get(why, why))
        self.held.add(inst.id, model, member)
        if probe or moved is not None:
            return Grant(True, bool(probe), transitions)
        return GRANTED

    def _acquire_locally(
        self,
        inst: OllamaInstance,
        model: str | None,
        now: float,
        panic: bool,
        member: str,
        sent: bool = False,
    ) -> Grant:
        grant = self._local.acquire(inst, model, now, panic)
        if grant.admitted:
            self.held.add(inst.id, model, member)
        elif sent:
            self.held.released_while_down.append((inst.id, model or "", member))
        return grant

    def release(self, inst: OllamaInstance, obs: Observation, now: float) -> Transitions:
        member = self.held.pop(inst.id, obs.model)
        if not self.link.is_up:
            if member is not None:
                self.held.released_while_down.append((inst.id, obs.model or "", member))
            return self._local.release(inst, obs, now)
        # The rules run here, on the handle (breaker, health, estimates); Redis gets the result.
        learned = record_outcome(inst, obs, now, self._max_retry_after)
        wall = self._wall()
        keys = self.keys.scripted(inst.id)
        args = [
            member or "",
            obs.model or "",
            int(wall * 1000),
            *self._breaker_action(inst, obs, learned, now, wall),
        ]
        args += [self.keys.channel, self._announce + inst.id, self.held.token]
        pipe = self.client.pipeline(transaction=False)
        RELEASE.queue(pipe, keys, args)
        try:
            self.facts.on_release(pipe, inst, obs, learned, wall)
        except Exception:  # a fact not shared must not fail the call that released
            _log.exception("shared state: facts.on_release failed")
        try:
            reply = self.line.execute_pipeline(pipe)[0]
            if isinstance(reply, Exception):
                if not isinstance(reply, NoScriptError):
                    raise reply
                reply = RELEASE(self.client, keys, args)  # Redis forgot the script (a restart)
        except LINK_ERRORS as exc:
            if member is not None:
                self.held.released_while_down.append((inst.id, obs.model or "", member))
            self.lost(exc)
            return learned
        count, model_count, state, retry, open_for = reply
        self._answered[inst.id] = time.monotonic()
        _set_counts(inst, obs.model, count, model_count)
        if args[3] == "":  # nothing written: the pool-wide breaker may differ from ours
            moved = self._adopt(inst.breaker, state, retry, open_for, wall, now)
            if moved is not None:
                return _merge(learned, moved)
        return learned

    def wait_starts(self) -> bool:
        """A caller is about to wait for a slot (called under the pool's lock). Releases are
        announced only while some process is registered as waiting: unless this one is already,
        register it and read the pool-wide counts afresh in the same round trip, because a slot
        freed before the registration was not announced. Returns whether the counts were read
        (the caller should route again on them before it waits).
        """
        if self._pid != os.getpid():
            self._start_here()
        wall = self._wall()
        if not self.link.is_up or self._waiting_until > wall + self.config.refresh_interval:
            return False
        instances = list(self._instances())
        pipe = self.client.pipeline(transaction=False)
        until = self._register_waiting(pipe, wall)
        head = len(pipe)
        for inst in instances:
            self._queue_counts(pipe, inst.id, wall)
        try:
            replies = pipe.execute()
        except LINK_ERRORS as exc:
            self.lost(exc)
            return False
        self._waiting_until = until
        answered = time.monotonic()
        for k, inst in enumerate(instances):
            self._answered[inst.id] = answered
            _set_pool_counts(inst, *replies[head + 2 * k : head + 2 * k + 2])
        return True

    def _register_waiting(self, pipe: Any, wall: float) -> float:
        """Queue this process's registration as waiting on ``pipe``; returns when it lapses."""
        until = wall + self._waiting_ttl
        pipe.zadd(self.keys.waiting, {self.held.token: int(until * 1000)})
        pipe.pexpire(self.keys.waiting, self._ttl_ms)
        return until

    def _queue_counts(self, pipe: Any, instance_id: str, wall: float) -> None:
        """Queue the read of one instance's pool-wide counts: live leases, then the models hash."""
        pipe.zcount(self.keys.leases(instance_id), f"({int(wall * 1000)}", "+inf")
        pipe.hgetall(self.keys.models(instance_id))

    def record_probe(self, inst: OllamaInstance, result: ProbeResult, now: float) -> Transitions:
        learned = self._local.record_probe(inst, result, now)
        if self.link.is_up:
            pipe = self.client.pipeline(transaction=False)
            self.facts.on_probe(pipe, inst, result, self._wall())
            if len(pipe):
                try:
                    pipe.execute(raise_on_error=False)  # a reply's error is the facts' own business
                except LINK_ERRORS as exc:
                    self.lost(exc)
        return learned

    def should_probe(self) -> bool:
        """Whether this process runs this health round (every process while Redis is down)."""
        return not self.link.is_up or self.election.should_probe()

    def own_in_flight(self, inst: OllamaInstance) -> int:
        """Slots this process holds on ``inst`` (the handle shows the pool's)."""
        return self.held.count.get(inst.id, 0)

    # -- the pool-wide breaker ----------------------------------------------------------------

    def _breaker_action(
        self, inst: OllamaInstance, obs: Observation, learned: Transitions, now: float, wall: float
    ) -> list[Any]:
        """What the release writes: [action, retry at (ms), open time (ms), reason, key TTL (ms)]."""
        action, reason = "", ""
        for change in learned.changes:
            if change.subject == "breaker":
                action = {"open": "open", "closed": "close"}.get(change.new, action)
                reason = change.reason
        if not action and obs.probe:
            action = "probe"  # a probe that gave no verdict gives its place back
        if action != "open":
            return [action, 0, 0, "", 0]
        breaker = inst.breaker
        retry_at = breaker.retry_at()
        retry_in = 0.0 if retry_at is None else retry_at - now
        open_ms = int(breaker.open_for * 1000)
        return [action, int((wall + retry_in) * 1000), open_ms, reason, 2 * open_ms + self._ttl_ms]

    def _adopt(
        self, breaker: CircuitBreaker, state: str, retry_ms: int, open_ms: int, wall: float, now: float
    ) -> BreakerTransition | None:
        """Make the local breaker show the pool-wide state Redis answered."""
        if state == "open":
            retry_in = retry_ms / 1000 - wall
            mine = breaker.retry_at()
            if mine is not None and abs((mine - now) - retry_in) < _SAME_RETRY:
                return None
            return breaker.adopt(
                _OPEN, now, retry_in=retry_in, open_for=open_ms / 1000, reason="opened in another process"
            )
        if state == "half_open":
            if breaker.retry_at() is not None or breaker.state_at(now) is _CLOSED:
                return breaker.adopt(_HALF_OPEN, now, reason="probing in another process")
            return None
        if breaker.retry_at() is not None or breaker.state_at(now) is not _CLOSED:
            return breaker.adopt(_CLOSED, now, reason="closed in another process")
        return None

    # -- the link -----------------------------------------------------------------------------

    def lost(self, exc: BaseException) -> None:
        """Redis failed: run on local state from now on (the handles show this process's own
        counts, as LocalState keeps them) until the background thread finds Redis again."""
        if not self.link.down(exc):
            return
        with self._lock:
            self._waiting_until = 0.0  # a Redis that comes back may have lost the registration
            for inst in self._instances():
                inst.in_flight = self.held.count.get(inst.id, 0)
                inst.in_flight_by_model = dict(self.held.by_model.get(inst.id, {}))
            self.epoch.bump()

    def _reconnect(self) -> None:
        try:
            self.client.ping()
        except LINK_ERRORS as exc:
            self.link.failed_again(exc)
            return
        with self._lock:
            self.link.up()
            orphans, self.held.released_while_down = self.held.released_while_down, []
        for instance_id, model, member in orphans:  # released while Redis was away
            RELEASE(
                self.client,
                self.keys.scripted(instance_id),
                [member, model, int(self._wall() * 1000), "", 0, 0, "", 0, "", "", ""],
            )
        self.renew()
        self.refresh()

    def renew(self) -> int:
        """Push the expiry of every lease this process holds; put back those Redis lost."""
        with self._lock:
            leases = self.held.snapshot()
        restored = self.held.renew(self.client, self.keys, leases, int((self._wall() + self._ttl) * 1000))
        if restored:
            _log.info(
                "shared state: %d lease(s) of this process written back (Redis restarted empty?)", restored
            )
        return restored

    # -- the snapshot -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the pool-wide counts and breakers (one pipelined round trip) into the handles;
        wake this process's queue when slots freed (a lease expired, a lost announcement)."""
        with self._lock:
            instances = list(self._instances())
            waits = self._has_waiters()
        ids = [inst.id for inst in instances]
        started = time.monotonic()
        wall = self._wall()
        pipe = self.client.pipeline(transaction=False)
        if waits:  # stay registered as waiting while callers wait (the registration expires)
            until = self._register_waiting(pipe, wall)
            pipe.zremrangebyscore(self.keys.waiting, "-inf", int(wall * 1000))  # the dead's
        head = len(pipe)
        for instance_id in ids:
            self._queue_counts(pipe, instance_id, wall)
            pipe.hmget(self.keys.breaker(instance_id), "s", "r", "o")
        mine = len(pipe)
        self.facts.read(pipe, ids)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies[:mine]:
            if isinstance(reply, Exception):
                raise reply
        if waits:
            self._waiting_until = max(self._waiting_until, until)
        freed = False
        changes: dict[str, Transitions] = {}
        with self._lock:
            if not self.link.is_up:
                return
            now = self._clock()
            for k, inst in enumerate(instances):
                if self._answered.get(inst.id, 0.0) > started:
                    continue  # a script answered after this read: its counts are newer
                count, models, (state, retry, open_ms) = replies[head + 3 * k : head + 3 * k + 3]
                freed = freed or count < inst.in_flight
                _set_pool_counts(inst, count, models)
                moved = self._adopt(inst.breaker, state or "", int(retry or 0), int(open_ms or 0), wall, now)
                if moved is not None:
                    changes[inst.id] = Transitions((breaker_change(moved),))
            by_id = {inst.id: inst for inst in instances}
            for instance_id, learned in self.facts.apply(replies[mine:], by_id, now, wall).items():
                if instance_id in changes:
                    for change in changes[instance_id].changes:
                        learned = Transitions(
                            (change, *learned.changes),
                            busy_until=learned.busy_until,
                            filters_changed=learned.filters_changed,
                            model_missing=learned.model_missing,
                            probe_round=learned.probe_round,
                        )
                changes[instance_id] = learned
            for instance_id, learned in changes.items():
                if instance_id in by_id and learned:
                    self._on_transitions(by_id[instance_id], learned)
        self.refreshed.set()
        if freed or any(t.routing_changed for t in changes.values()):
            self._wake(False)

    def _announced(self, release: Release) -> None:
        """Another process released a slot: its count, and one hand-out in this process."""
        token, instance_id, count, model, model_count = release
        if token == self.held.token:
            return
        with self._lock:
            if not self.link.is_up:
                return
            inst = next((i for i in self._instances() if i.id == instance_id), None)
            if inst is None:
                return
            self._answered[instance_id] = time.monotonic()
            _set_counts(inst, model or None, count, model_count)
        self._wake(True)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (refresh, renewal, reconnect) and the subscriber (idempotent)."""
        if self._pid != os.getpid():
            self._start_here()

    def _start_here(self) -> None:
        with self._lock:
            if self._pid == os.getpid() or self._stop.is_set():
                return
            if self.held.pid != os.getpid():
                # Forked (gunicorn --preload), whether or not the parent ever started the store:
                # the parent's leases and token are not ours, and a shared token would make two
                # workers' lease ids collide in Redis.
                self.held = HeldLeases()
                self._announce = self.held.token + "\t"
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="gleitzeit-shared-state", daemon=True)
            self._subscriber = Subscriber(
                self.client, self.keys.channel, self._announced, self.config.reconnect_interval
            )
        self._thread.start()
        self._subscriber.start()

    def close(self) -> None:
        """Stop the threads and close the connections (held leases expire after the TTL)."""
        self._stop.set()
        for worker in (self._thread,):
            if worker is not None and worker.is_alive():
                worker.join(timeout=2.0)
        if self._subscriber is not None:
            self._subscriber.stop()
        self.election.close()
        try:
            self.line.close()
            self.client.close()
        except Exception:  # closing a broken link is not an error
            _log.debug("shared state: closing the client failed", exc_info=True)

    def _run(self) -> None:
        renew_every = self._ttl / 3
        next_renewal = time.monotonic() + renew_every
        while not self._stop.wait(self.config.refresh_interval):
            try:
                if not self.link.is_up:
                    if self.link.due():
                        self._reconnect()
                    continue
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + renew_every
                    self.renew()
                self.refresh()
            except LINK_ERRORS as exc:
                self.lost(exc)
            except Exception:
                _log.exception("shared state: background refresh failed")

    def status(self) -> dict[str, Any]:
        """Shared-state mode for the pool's status (no credentials)."""
        info = self.link.status()
        info["held"] = sum(self.held.count.values())
        return info

    def __repr__(self) -> str:
        return f"RedisState(url={self.link.url!r}, namespace={self.keys.namespace!r}, up={self.link.is_up})"
