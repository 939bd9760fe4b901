"""The one place that turns an instance into a transport: sync, per event loop, or for probes.

An instance's transport carries its real URL (credentials included), its headers, its TLS
settings (see :func:`~gleitzeit_llm.ollama.tls.tls_verify`), the pool's timeouts and one
connection pool. Calls and health probes get their transports here, so both reach an instance
the same way, and a transport that cannot be built (a CA bundle that became unreadable, a
client certificate without its key) is that instance's :class:`InstanceFailedError`, like a
refused connection: the call fails over and the probe fails, nothing else is disturbed.

:class:`Connections` holds the provider's transports: one sync transport per instance, shared by
every thread, and one async transport per (event loop, instance), closed when its loop shuts
down. ``httpx.AsyncClient`` is bound to the loop that first used it, hence one per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any, Protocol, TypeVar

from gleitzeit_llm.errors import InstanceError, InstanceFailedError
from gleitzeit_llm.ollama import AsyncOllamaTransport, OllamaTransport, Timeouts
from gleitzeit_llm.ollama._classify import describe_instance
from gleitzeit_llm.ollama.tls import tls_verify
from gleitzeit_llm.ollama.urls import redact_url

__all__ = [
    "Connections",
    "ProbeTransports",
    "Probed",
    "Reachable",
    "async_transport",
    "probe_timeouts",
    "probe_transport",
    "sync_transport",
]

_T = TypeVar("_T")

TLS = tuple[Any, "str | None", "str | None"]  # verify, client_cert, client_key


class Reachable(Protocol):
    """What an instance must tell to be reached (``OllamaInstance`` has it)."""

    id: str
    connect_url: str  # with credentials
    config: Any  # headers, verify, client_cert, client_key
    in_flight: int  # calls holding a slot on it (a replaced transport waits for them)


def probe_timeouts(timeout: float) -> Timeouts:
    """The timeouts of one health probe request: ``timeout`` for every phase."""
    return Timeouts(connect=timeout, first_byte=timeout, idle=timeout)


def _build(instance_id: str, url: str, build: Callable[[], _T]) -> _T:
    try:
        return build()
    except InstanceError:
        raise
    except Exception as exc:
        shown = redact_url(url)
        raise InstanceFailedError(
            f"{describe_instance(instance_id, shown)}: cannot set up a connection: "
            f"{type(exc).__name__}: {exc}; check its url, headers and TLS settings "
            "(verify, client_cert, client_key)",
            instance=instance_id,
            url=shown,
        ) from exc


def _options(instance_id: str, headers: Mapping[str, str], tls: TLS, timeouts: Timeouts) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "timeouts": timeouts,
        "headers": dict(headers) or None,
        "verify": tls_verify(*tls),
    }


def _tls(inst: Reachable) -> TLS:
    config = inst.config
    return (config.verify, config.client_cert, config.client_key)


def async_transport(inst: Reachable, timeouts: Timeouts) -> AsyncOllamaTransport:
    """A new async transport for ``inst`` (raises :class:`InstanceFailedError` when it cannot be built)."""
    options = lambda: _options(inst.id, inst.config.headers, _tls(inst), timeouts)  # noqa: E731
    return _build(inst.id, inst.connect_url, lambda: AsyncOllamaTransport(inst.connect_url, **options()))


def sync_transport(inst: Reachable, timeouts: Timeouts) -> OllamaTransport:
    """A new sync transport for ``inst`` (raises :class:`InstanceFailedError` when it cannot be built)."""
    options = lambda: _options(inst.id, inst.config.headers, _tls(inst), timeouts)  # noqa: E731
    return _build(inst.id, inst.connect_url, lambda: OllamaTransport(inst.connect_url, **options()))


def probe_transport(
    instance_id: str, url: str, headers: Mapping[str, str], tls: TLS, timeout: float
) -> AsyncOllamaTransport:
    """A new async transport for the health monitor's own loop, with probe timeouts."""
    return _build(
        instance_id,
        url,
        lambda: AsyncOllamaTransport(url, **_options(instance_id, headers, tls, probe_timeouts(timeout))),
    )


def _keep(table: dict[str, tuple[str, _T]], instance_id: str, url: str, transport: _T) -> _T:
    # Only the first use of an instance (or of its new URL) gets here; reuse stays inline.
    table[instance_id] = (url, transport)
    return transport


class _Retired:
    """Transports of instances re-added under another URL, closed once their calls are done.

    The old instance may still drain calls that hold its transport (a stream being read), so
    closing it at once would cut them; keeping it forever would leave its connections open.
    Each replacement closes every retired transport whose instance has nothing in flight; the
    rest close with the provider.
    """

    def __init__(self) -> None:
        self._held: list[tuple[Reachable, Any]] = []

    def retire(self, old: Reachable | None, transport: Any) -> list[Any]:
        """Add one; return the retired transports that may be closed now (the caller closes them)."""
        self._held.append((old, transport))
        done = [t for i, t in self._held if i is None or i.in_flight == 0]
        self._held = [(i, t) for i, t in self._held if i is not None and i.in_flight > 0]
        return done

    def take_all(self) -> list[Any]:
        held, self._held = self._held, []
        return [t for _, t in held]


class Probed(Protocol):
    """What the health monitor knows of an instance it probes (``routing.health.ProbeTarget``)."""

    @property
    def instance_id(self) -> str: ...
    @property
    def url(self) -> str: ...  # with credentials
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def tls(self) -> TLS: ...


class ProbeTransports:
    """The health monitor's transports, on its own event loop: one per instance, probe timeouts.

    A transport is rebuilt when its instance's URL changed and closed once its instance is no
    longer probed; one that cannot be built raises :class:`InstanceFailedError` (that probe fails).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._by_instance: dict[str, tuple[str, AsyncOllamaTransport]] = {}

    async def keep_only(self, instance_ids: Collection[str]) -> None:
        """Close the transports of every instance not in ``instance_ids``."""
        for instance_id in [i for i in self._by_instance if i not in instance_ids]:
            await self._by_instance.pop(instance_id)[1].aclose()

    async def get(self, target: Probed) -> AsyncOllamaTransport:
        """``target``'s transport, built on first use."""
        known = self._by_instance.get(target.instance_id)
        if known is not None and known[0] == target.url:
            return known[1]
        if known is not None:  # the instance was re-added under another URL
            await self._by_instance.pop(target.instance_id)[1].aclose()
        transport = probe_transport(target.instance_id, target.url, target.headers, target.tls, self.timeout)
        return _keep(self._by_instance, target.instance_id, target.url, transport)

    async def aclose(self) -> None:
        """Close every transport."""
        await self.keep_only(())


class _LoopTransports:
    """The async transports of one event loop, closed when that loop shuts down."""

    def __init__(self) -> None:
        self.by_instance: dict[str, tuple[str, AsyncOllamaTransport]] = {}
        self.owners: dict[str, Reachable] = {}  # the handle each transport was built for
        self.retired = _Retired()
        self.closer: Any = None
        self.warm = False  # a probe round ran through these transports

    async def replace(self, inst: Reachable, transport: AsyncOllamaTransport) -> AsyncOllamaTransport:
        """Keep ``transport`` for ``inst``; the one it replaces is closed once its calls are done."""
        known = self.by_instance.get(inst.id)
        old_owner = self.owners.get(inst.id)
        self.owners[inst.id] = inst
        _keep(self.by_instance, inst.id, inst.connect_url, transport)
        if known is not None:
            for done in self.retired.retire(old_owner, known[1]):
                with contextlib.suppress(Exception):
                    await done.aclose()
        return transport

    async def aclose(self) -> None:
        transports = [t for _, t in self.by_instance.values()] + self.retired.take_all()
        self.by_instance.clear()
        self.owners.clear()
        for transport in transports:
            with contextlib.suppress(Exception):
                await transport.aclose()


async def _close_on_loop_shutdown(transports: _LoopTransports) -> AsyncIterator[None]:
    # An async generator parked at its first yield: asyncio.run() (and pytest-asyncio) call
    # loop.shutdown_asyncgens() before closing a loop, which runs this finally on that loop,
    # so connections opened on a loop are closed on it, whoever forgot to call aclose().
    try:
        yield
    finally:
        await transports.aclose()


class Connections:
    """The transports of one provider: sync ones shared by all threads, async ones per loop.

    A transport is rebuilt when its instance's URL changed (an instance re-added under the same
    id); one that cannot be built raises :class:`InstanceFailedError` and is tried again next time.
    """

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self._lock = threading.Lock()
        self._sync: dict[str, tuple[str, OllamaTransport]] = {}
        self._sync_owners: dict[str, Reachable] = {}
        self._sync_retired = _Retired()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopTransports] = (
            weakref.WeakKeyDictionary()
        )
        self.sync_warm = False  # a probe round ran through the sync transports

    async def _this_loop(self) -> _LoopTransports:
        loop = asyncio.get_running_loop()
        per_loop = self._loops.get(loop)
        if per_loop is None:
            per_loop = _LoopTransports()
            closer = _close_on_loop_shutdown(per_loop)
            per_loop.closer = closer
            self._loops[loop] = per_loop
            # First step registers it with the loop's asyncgen hooks; it parks at its yield.
            await closer.__anext__()
        return per_loop

    async def loop_transport(self, inst: Reachable) -> AsyncOllamaTransport:
        """``inst``'s transport on the running event loop."""
        per_loop = self._loops.get(asyncio.get_running_loop()) or await self._this_loop()
        known = per_loop.by_instance.get(inst.id)
        if known is not None and known[0] == inst.connect_url:
            return known[1]
        return await per_loop.replace(inst, async_transport(inst, self.timeouts))

    def sync_transport(self, inst: Reachable) -> OllamaTransport:
        """``inst``'s sync transport."""
        with self._lock:
            known = self._sync.get(inst.id)
            if known is not None and known[0] == inst.connect_url:
                return known[1]
            transport = _keep(self._sync, inst.id, inst.connect_url, sync_transport(inst, self.timeouts))
            old_owner = self._sync_owners.get(inst.id)
            self._sync_owners[inst.id] = inst
            done = self._sync_retired.retire(old_owner, known[1]) if known is not None else []
        for old in done:
            old.close()
        return transport

    def loop_is_warm(self) -> bool:
        """Whether a probe round ran through the running event loop's transports already."""
        per_loop = self._loops.get(asyncio.get_running_loop())
        return per_loop is not None and per_loop.warm

    async def mark_loop_warm(self) -> None:
        """Note that a probe round ran through the running event loop's transports."""
        (await self._this_loop()).warm = True

    async def aclose_loop(self) -> None:
        """Close this event loop's transports."""
        transports = self._loops.pop(asyncio.get_running_loop(), None)
        if transports is not None:
            await transports.aclose()
            if transports.closer is not None:
                await transports.closer.aclose()

    def close_sync(self) -> None:
        """Close the sync transports."""
        with self._lock:
            transports, self._sync = self._sync, {}
            self._sync_owners = {}
            retired = self._sync_retired.take_all()
            self.sync_warm = False
        for transport in [t for _, t in transports.values()] + retired:
            transport.close()
