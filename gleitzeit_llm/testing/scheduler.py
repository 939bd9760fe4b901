"""Model residency of one emulated server: loads, slots, keep_alive and eviction.

Mirrors Ollama's scheduler (``server/sched.go``) closely enough for routing tests:

* a request for a resident model takes a reference on its runner at once; requests for a model
  that is not resident wait for its load, and at most ``max_queue`` may wait (one more gets 503);
* at most ``max_loaded_models`` runners are resident; a load waits until some resident model is
  idle, then evicts the least recently used idle one (loads are served first come, first served);
* each runner has ``num_parallel`` slots; requests beyond them wait without bound, FIFO (as on
  ``llm/server.go``'s semaphore); each slot keeps a prompt cache (:mod:`.promptcache`);
* an idle runner expires ``keep_alive`` after its last use (the timer does not run while any
  request holds it); ``keep_alive`` 0 unloads when the last request ends, negative never.

All methods run on the emulator's event loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gleitzeit_llm.testing.faults import BUSY_MESSAGE
from gleitzeit_llm.testing.models import EmulatedModel
from gleitzeit_llm.testing.promptcache import PromptCache, slot_policy
from gleitzeit_llm.testing.settings import Settings
from gleitzeit_llm.testing.wire import FOREVER, ApiError, forever_ns, format_local

__all__ = ["Lease", "Runner", "Scheduler", "Slots", "Stats"]

_LOAD_ABORTED = "llama-server process has terminated: signal: killed"


class Slots:
    """A FIFO counting semaphore whose capacity can change while it is in use."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> bool:
        """Take a slot; returns whether the caller had to wait for it."""
        if self.active < self.capacity and not self._waiters:
            self.active += 1
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just before the cancellation arrived: hand it on
            else:
                self._waiters.remove(waiter)
            raise
        return True

    def release(self) -> None:
        self.active -= 1
        self._wake()

    def set_capacity(self, capacity: int) -> None:
        self.capacity = capacity
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.active < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)


@dataclass(eq=False)
class Runner:
    """A loaded (or loading, or waiting to load) model."""

    model: EmulatedModel
    slots: Slots
    ready: asyncio.Future[None]
    keep_alive: float
    context_length: int
    #: pending (waiting for room) -> loading -> ready
    state: str = "pending"
    #: Requests holding the runner (waiting for a slot or generating): keep_alive does not run.
    refcount: int = 0
    generating: int = 0
    last_used: float = 0.0
    expires_at_ns: int | None = None
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    load_started: float = 0.0
    load_real: float = 0.0
    load_modelled: float = 0.0
    #: The runner's per-slot prompt caches (``num_parallel`` slots of ``context_length`` tokens).
    cache: PromptCache = field(default_factory=lambda: PromptCache(1, 2048))


@dataclass
class Lease:
    """A request's hold on a runner."""

    runner: Runner
    #: The request needed (or waited for) a load.
    cold: bool
    #: Modelled nanoseconds from arrival until the runner was ready.
    load_ns: int


@dataclass
class Stats:
    """What the scheduler counted since the start or :meth:`clear` (keys are ``name:tag``)."""

    loads: collections.Counter[str] = field(default_factory=collections.Counter)
    unloads: collections.Counter[str] = field(default_factory=collections.Counter)
    max_concurrency: int = 0
    max_model_concurrency: collections.Counter[str] = field(default_factory=collections.Counter)

    def clear(self) -> None:
        self.loads.clear()
        self.unloads.clear()
        self.max_concurrency = 0
        self.max_model_concurrency.clear()


class Scheduler:
    """Runners of one emulated server (see the module docstring for the rules)."""

    def __init__(self, settings: Settings, on_change: Callable[[], None]) -> None:
        self.settings = settings
        self.runners: dict[str, Runner] = {}
        self.generating = 0
        self.queued = 0
        self.stats = Stats()
        self._pending: collections.deque[Runner] = collections.deque()
        self._on_change = on_change
        self._changed: asyncio.Event | None = None

    # -- helpers ---------------------------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        self._on_change()

    async def _wait_change(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def _resident(self) -> int:
        return sum(1 for r in self.runners.values() if r.state != "pending")

    def _needs_room(self) -> bool:
        return bool(self._pending) and self._resident() >= self.settings.max_loaded_models

    def _real(self, modelled: float) -> float:
        return modelled * self.settings.time_scale

    # -- requests --------------------------------------------------------------------------

    async def acquire(self, model: EmulatedModel, keep_alive: float | None, num_ctx: int | None) -> Lease:
        """Hold a ready runner for ``model``, loading it first if needed."""
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        keep = self.settings.keep_alive if keep_alive is None else keep_alive
        if keep < 0:
            keep = FOREVER
        runner = self.runners.get(model.key)
        if runner is not None and runner.state == "ready":
            self._attach(runner, keep)
            return Lease(runner, cold=False, load_ns=0)
        if self.queued >= self.settings.max_queue:
            raise ApiError(503, BUSY_MESSAGE)
        self.queued += 1
        try:
            if runner is None:
                runner = self._new_runner(model, num_ctx)
            self._attach(runner, keep)
            try:
                await asyncio.shield(runner.ready)
            except BaseException:
                self.release(runner)
                raise
        finally:
            self.queued -= 1
        return Lease(runner, cold=True, load_ns=self._load_share(runner, arrival, loop.time()))

    def _attach(self, runner: Runner, keep_alive: float) -> None:
        runner.refcount += 1
        runner.keep_alive = keep_alive  # the latest request decides, as in Ollama
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        runner.expires_at_ns = None

    def release(self, runner: Runner) -> None:
        """Drop a request's hold; an idle runner starts its keep_alive timer (or goes)."""
        runner.refcount -= 1
        if runner.refcount > 0 or runner.state != "ready":
            self._notify()
            return
        runner.last_used = asyncio.get_running_loop().time()
        if self._needs_room():
            # A load is waiting for room and this runner just became the idle one: it goes
            # now, so that a new request for it queues behind the waiting load (FIFO).
            self._unload(runner)
        else:
            self._schedule_expiry(runner)
        self._notify()

    def _load_share(self, runner: Runner, arrival: float, ready_at: float) -> int:
        """Modelled load time seen by a request: time waiting for room plus its part of the load."""
        scale = self.settings.time_scale
        waited_for_room = max(0.0, runner.load_started - arrival)
        if arrival <= runner.load_started or runner.load_real <= 0:
            load_part = runner.load_modelled
        else:
            done = (arrival - runner.load_started) / runner.load_real
            load_part = runner.load_modelled * max(0.0, 1.0 - done)
        room = waited_for_room / scale if scale > 0 else 0.0
        return int((room + load_part) * 1e9)

    # -- loading and unloading -------------------------------------------------------------

    def _new_runner(self, model: EmulatedModel, num_ctx: int | None) -> Runner:
        loop = asyncio.get_running_loop()
        runner = Runner(
            model=model,
            slots=Slots(self.settings.num_parallel),
            ready=loop.create_future(),
            keep_alive=self.settings.keep_alive,
            context_length=min(num_ctx or self.settings.default_num_ctx, model.context_length or 2048),
        )
        runner.cache = self._new_cache(runner.context_length)
        self.runners[model.key] = runner
        self._pending.append(runner)
        runner.task = loop.create_task(self._load(runner))
        return runner

    async def _load(self, runner: Runner) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._pending and self._pending[0] is runner:
                    if self._resident() < self.settings.max_loaded_models:
                        break
                    victim = self._lru_idle()
                    if victim is not None:
                        self._unload(victim)
                        continue
                await self._wait_change()
            self._pending.popleft()
            modelled = runner.model.load_time
            runner.load_modelled = self.settings.load_time if modelled is None else modelled
            runner.load_real = self._real(runner.load_modelled)
            runner.load_started = loop.time()
            runner.state = "loading"
            self._notify()
            if runner.load_real > 0:
                await asyncio.sleep(runner.load_real)
            runner.state = "ready"
            runner.last_used = loop.time()
            self.stats.loads[runner.model.name] += 1
            runner.ready.set_result(None)
            if runner.refcount == 0:
                self._schedule_expiry(runner)
            self._notify()
        except asyncio.CancelledError:
            if not runner.ready.done():
                # Requests waiting for this load see a failed load, not a cancellation of their own.
                runner.ready.set_exception(ApiError(500, _LOAD_ABORTED))
                runner.ready.exception()  # retrieved: no "never retrieved" noise if nobody waits
            raise

    def _new_cache(self, context_length: int) -> PromptCache:
        # Ollama's KV cache is num_ctx * num_parallel split into num_parallel slots of num_ctx.
        return PromptCache(self.settings.num_parallel, context_length, self._slot_policy())

    def _slot_policy(self) -> str:
        return slot_policy(self.settings.version, self.settings.multiuser_cache)

    def _lru_idle(self) -> Runner | None:
        idle = [r for r in self.runners.values() if r.state == "ready" and r.refcount == 0]
        return min(idle, key=lambda r: r.last_used) if idle else None

    def _schedule_expiry(self, runner: Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        keep = runner.keep_alive
        now_ns = time.time_ns()
        if keep == 0:
            self._unload(runner)
            return
        if keep == FOREVER:
            runner.expires_at_ns = forever_ns(now_ns)
            return
        runner.expires_at_ns = now_ns + int(keep * 1e9)
        # With time_scale 0 every delay is instant; an instant keep_alive would unload after each
        # request, so a zero scale keeps idle models until evicted instead.
        if self.settings.time_scale > 0:
            loop = asyncio.get_running_loop()
            runner.timer = loop.call_later(self._real(keep), self._expire, runner)

    def _expire(self, runner: Runner) -> None:
        runner.timer = None
        if self.runners.get(runner.model.key) is runner and runner.refcount == 0:
            self._unload(runner)
            self._notify()

    def _unload(self, runner: Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        if self.runners.get(runner.model.key) is runner:
            del self.runners[runner.model.key]
            self.stats.unloads[runner.model.name] += 1

    def preload(self, model: EmulatedModel, keep_alive: float | None = None) -> None:
        """Make ``model`` resident at once (no load time, not counted as a load)."""
        existing = self.runners.get(model.key)
        if existing is not None and existing.state != "pending":
            return
        loop = asyncio.get_running_loop()
        runner = Runner(
            model=model,
            slots=Slots(self.settings.num_parallel),
            ready=loop.create_future(),
            keep_alive=self.settings.keep_alive if keep_alive is None else keep_alive,
            context_length=min(self.settings.default_num_ctx, model.context_length or 2048),
            state="ready",
            last_used=loop.time(),
        )
        if runner.keep_alive < 0:
            runner.keep_alive = FOREVER
        runner.cache = self._new_cache(runner.context_length)
        runner.ready.set_result(None)
        self.runners[model.key] = runner
        while self._resident() > self.settings.max_loaded_models:
            victim = self._lru_idle()
            if victim is None or victim is runner:
                break
            self._unload(victim)
        self._schedule_expiry(runner)
        self._notify()

    def expire(self, key: str) -> None:
        """The unload helper (empty request with ``keep_alive: 0``): go as soon as idle."""
        runner = self.runners.get(key)
        if runner is None:
            return
        runner.keep_alive = 0
        if runner.refcount == 0 and runner.state == "ready":
            self._unload(runner)
        self._notify()

    def unload(self, key: str | None = None) -> None:
        """Unload one idle-or-not model at once (``None``: all), as if the runner were stopped."""
        for runner in list(self.runners.values()):
            if key is None or runner.model.key == key:
                if runner.task is not None and not runner.task.done():
                    runner.task.cancel()
                if runner in self._pending:
                    self._pending.remove(runner)
                self._unload(runner)
        self._notify()

    def reset(self) -> None:
        """Forget every runner (the server process went away)."""
        self.unload(None)
        self._pending.clear()
        self.queued = 0
        self.generating = 0

    def apply_settings(self) -> None:
        """Take changed settings (slot counts, room for models) into account."""
        for runner in self.runners.values():
            runner.slots.set_capacity(self.settings.num_parallel)
            runner.cache.resize(self.settings.num_parallel)
            runner.cache.policy = self._slot_policy()
        while self._resident() > self.settings.max_loaded_models:
            victim = self._lru_idle()
            if victim is None:
                break
            self._unload(victim)
        self._notify()

    # -- generation bookkeeping ------------------------------------------------------------

    def begin_generation(self, runner: Runner) -> tuple[int, int]:
        """Count a request as generating; returns (server-wide, per-model) concurrency."""
        self.generating += 1
        runner.generating += 1
        stats = self.stats
        stats.max_concurrency = max(stats.max_concurrency, self.generating)
        name = runner.model.name
        stats.max_model_concurrency[name] = max(stats.max_model_concurrency[name], runner.generating)
        self._on_change()
        return self.generating, runner.generating

    def end_generation(self, runner: Runner) -> None:
        self.generating -= 1
        runner.generating -= 1
        self._on_change()

    # -- reporting -------------------------------------------------------------------------

    def ps(self) -> list[dict[str, object]]:
        """``/api/ps`` entries, latest expiry first."""
        now_ns = time.time_ns()
        rows: list[tuple[int, dict[str, object]]] = []
        for runner in self.runners.values():
            if runner.state == "pending":
                continue
            model = runner.model
            expires = runner.expires_at_ns
            if expires is None:  # in use or loading: Ollama shows now + session duration
                keep = runner.keep_alive
                expires = forever_ns(now_ns) if keep == FOREVER else now_ns + int(keep * 1e9)
            rows.append(
                (
                    expires,
                    {
                        "name": model.name,
                        "model": model.name,
                        "size": model.size,
                        "digest": model.digest,
                        "details": model.details(),
                        "expires_at": format_local(expires),
                        "size_vram": model.size,
                        "context_length": runner.context_length,
                    },
                )
            )
        rows.sort(key=lambda row: row[0], reverse=True)
        return [row for _, row in rows]

    def loaded(self) -> list[str]:
        """Names of resident (loaded or loading) models."""
        return [r.model.name for r in self.runners.values() if r.state != "pending"]
