"""Active health checks that cost the servers nothing.

Each round asks every instance ``GET /api/version`` (alive?), ``GET /api/tags`` (installed models)
and ``GET /api/ps`` (resident models). None of these loads a model or touches keep_alive.

The monitor runs on its own event loop in a daemon thread, so sync scripts, async programs and
programs that run several event loops one after the other all get the same background checks,
and a busy caller loop cannot delay them. The provider's ``initialize()`` runs one round on the
caller's loop instead, through the caller's transports (:meth:`HealthMonitor.round_with`), so
their connections are open before the first call. Each probe builds its own transport: one that
cannot be built fails that probe, not the round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from gleitzeit_llm.connections import ProbeTransports, probe_timeouts
from gleitzeit_llm.ollama import AsyncOllamaTransport, OllamaTransport, Timeouts
from gleitzeit_llm.ollama.names import model_key

__all__ = ["HealthMonitor", "ProbeResult", "probe_instance"]

logger = logging.getLogger("gleitzeit_llm.health")


@dataclass
class ProbeResult:
    """What one round of probes learned about one instance."""

    instance_id: str
    ok: bool
    latency: float = 0.0
    version: str | None = None
    installed: frozenset[str] | None = None
    loaded: dict[str, float] = field(default_factory=dict)  # model -> seconds it stays resident
    error: str | None = None


def _remaining_seconds(expires_at: object, now_wall: datetime) -> float:
    if not isinstance(expires_at, str) or not expires_at:
        return 300.0
    try:
        when = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return 300.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    remaining = (when - now_wall).total_seconds()
    # Ollama reports keep_alive < 0 as an expiry far in the future.
    return remaining if remaining < 10 * 365 * 86400 else float("inf")


async def probe_instance(
    instance_id: str, transport: AsyncOllamaTransport, timeouts: Timeouts | None = None
) -> ProbeResult:
    """Probe one instance: version, installed models and resident models."""
    started = time.perf_counter()
    try:
        version = await transport.version(timeouts=timeouts)
        tags = await transport.tags(timeouts=timeouts)
        ps = await transport.ps(timeouts=timeouts)
    except Exception as exc:
        return ProbeResult(instance_id, ok=False, latency=time.perf_counter() - started, error=str(exc))
    return _probe_result(instance_id, started, version, tags, ps)


def probe_instance_sync(instance_id: str, transport: OllamaTransport, timeouts: Timeouts) -> ProbeResult:
    """Sync twin of :func:`probe_instance`."""
    started = time.perf_counter()
    try:
        version = transport.version(timeouts=timeouts)
        tags = transport.tags(timeouts=timeouts)
        ps = transport.ps(timeouts=timeouts)
    except Exception as exc:
        return ProbeResult(instance_id, ok=False, latency=time.perf_counter() - started, error=str(exc))
    return _probe_result(instance_id, started, version, tags, ps)


def _probe_result(instance_id: str, started: float, version: Any, tags: Any, ps: Any) -> ProbeResult:
    now_wall = datetime.now(timezone.utc)
    installed = frozenset(model_key(m.model or m.name or "") for m in tags.models)
    loaded = {
        model_key(m.model or m.name or ""): _remaining_seconds(m.expires_at, now_wall) for m in ps.models
    }
    return ProbeResult(
        instance_id,
        ok=True,
        latency=time.perf_counter() - started,
        version=version.version,
        installed=installed,
        loaded=loaded,
    )


class ProbeTarget(NamedTuple):
    """What the monitor needs to reach one instance."""

    instance_id: str
    url: str
    headers: dict[str, str]
    tls: tuple[bool | str, str | None, str | None] = (True, None, None)  # verify, cert, key


class HealthMonitor:
    """Runs probe rounds every ``interval`` seconds in a background thread.

    ``targets()`` returns the instances to probe now (so added and removed instances are
    followed); ``on_result`` receives each :class:`ProbeResult` in the monitor thread.
    """

    def __init__(
        self,
        targets: Callable[[], Sequence[ProbeTarget]],
        on_result: Callable[[ProbeResult], None],
        *,
        interval: float,
        timeout: float,
        name: str = "gleitzeit-health",
    ) -> None:
        self._targets = targets
        self._on_result = on_result
        self.interval = interval
        self.timeout = timeout
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        # One probe round at a time: a round closes the transports of instances no longer
        # probed, and httpcore answers a request still running in a closed pool by opening a
        # new connection there that nothing ever closes. Made on the monitor's loop.
        self._round_lock: asyncio.Lock | None = None
        self._closing = False  # the monitor's transports were closed: no more rounds
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._transports = ProbeTransports(timeout)  # on the monitor's own loop
        self._round_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.rounds = 0

    # -- lifecycle (any thread) ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def stop(self, timeout: float = 5.0) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(self._stop.set)  # type: ignore[union-attr]
        thread.join(timeout)
        self._thread = None

    def check_now(self, timeout: float | None = None) -> None:
        """Run one probe round now and wait for it (from sync code, not the monitor thread)."""
        loop = self._loop
        if loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._round(), loop)
        future.result(timeout if timeout is not None else self.timeout * 3 + 1)

    async def check_now_async(self) -> None:
        """Run one probe round now and await it from any event loop."""
        loop = self._loop
        if loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._round(), loop)
        await asyncio.wrap_future(future)

    def request_round(self) -> None:
        """Probe every instance soon, without waiting (any thread); requests while one is pending
        are merged. Used when residency changed behind the pool's back (a model load may evict)."""
        loop = self._loop
        if loop is None or self._round_pending:
            return
        self._round_pending = True
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(self._start_requested_round)

    def _start_requested_round(self) -> None:
        if self._closing:  # asked while the monitor stopped: its transports are closed
            return
        task = asyncio.ensure_future(self._requested_round())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _requested_round(self) -> None:
        await self._safe_round(requested=True)

    async def _safe_round(self, *, requested: bool = False) -> None:
        assert self._round_lock is not None
        async with self._round_lock:
            if requested:  # requests from now on ask for the next round
                self._round_pending = False
            try:
                await self._locked_round()
            except Exception:  # a bug in a probe must not end health checking
                logger.exception("health check round failed")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- monitor thread -----------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._closing = self._round_pending = False
        self._ready.set()
        try:
            while not self._stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
                if self._stop.is_set():
                    break
                await self._safe_round()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            async with self._round_lock:  # after a check_now() round still running; none after
                self._closing = True
                await self._transports.aclose()

    async def _round(self) -> None:
        assert self._round_lock is not None  # runs on the monitor's loop, after _main began
        async with self._round_lock:
            await self._locked_round()

    async def _locked_round(self) -> None:
        if self._closing:
            return
        targets = list(self._targets())
        await self._transports.keep_only({target.instance_id for target in targets})
        probes = [self._bounded(target.instance_id, self._transports.get(target)) for target in targets]
        for result in await asyncio.gather(*probes):
            self._on_result(result)
        self.rounds += 1

    async def round_with(
        self, transport_for: Callable[[ProbeTarget], Awaitable[AsyncOllamaTransport]]
    ) -> None:
        """One probe round on the running event loop through the caller's transports.

        ``initialize()`` uses it: the connection each probe opens stays in the caller's pool,
        so the first real call to every instance finds it open.
        """
        targets = list(self._targets())
        results = await asyncio.gather(*(self._bounded(t.instance_id, transport_for(t)) for t in targets))
        for result in results:
            self._on_result(result)
        self.rounds += 1

    def round_with_sync(self, transport_for: Callable[[ProbeTarget], OllamaTransport]) -> None:
        """Sync twin of :meth:`round_with`: probes every instance in parallel threads."""
        targets = list(self._targets())
        results: list[ProbeResult] = [ProbeResult(t.instance_id, ok=False) for t in targets]

        def probe(index: int, target: ProbeTarget) -> None:
            started = time.perf_counter()
            try:
                transport = transport_for(target)
            except Exception as exc:
                latency = time.perf_counter() - started
                results[index] = ProbeResult(target.instance_id, ok=False, latency=latency, error=str(exc))
                return
            results[index] = probe_instance_sync(target.instance_id, transport, probe_timeouts(self.timeout))

        threads = [
            threading.Thread(target=probe, args=(i, t), name=f"{self._name}-{t.instance_id}", daemon=True)
            for i, t in enumerate(targets)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            # Each request is bounded by the timeout per phase; a probe still running past
            # this is reported as timed out and finishes on its own.
            thread.join(self.timeout * 3 + 1)
        for thread, target, result in zip(threads, targets, results, strict=True):
            if thread.is_alive():
                result = ProbeResult(target.instance_id, ok=False, error="health check timed out")
            self._on_result(result)
        self.rounds += 1

    async def _bounded(self, instance_id: str, transport: Awaitable[AsyncOllamaTransport]) -> ProbeResult:
        started = time.perf_counter()
        try:
            built = await transport
        except Exception as exc:  # the transport could not be built: this instance's probe fails
            return ProbeResult(instance_id, ok=False, latency=time.perf_counter() - started, error=str(exc))
        try:
            return await asyncio.wait_for(
                probe_instance(instance_id, built, probe_timeouts(self.timeout)), self.timeout * 2
            )
        except asyncio.TimeoutError:
            return ProbeResult(
                instance_id, ok=False, latency=self.timeout * 2, error="health check timed out"
            )
