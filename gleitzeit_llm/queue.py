"""The slot queue: callers waiting for a free slot, first come, first served.

Every waiter, async (an event-loop future) or sync (a thread event), gets a ticket when it joins
and keeps its place until it is served, cancelled or times out: nothing re-queues it. Waiters are
grouped by their request (model, tags, strategy, instances already tried, ...): two waiters with
the same request are routed identically, so when the head of a group cannot be served now, no
one behind it in that group can either.

Hand-out rule (:meth:`SlotQueue.dispatch`): the group heads are tried oldest ticket first; a
group whose head gets a slot keeps handing out while slots are free; a group whose head is still
full is skipped (its older ticket does not block a younger waiter of another group that the freed
instance can serve). A freed slot therefore goes to the oldest waiter that can use it, and a
release costs one routing attempt per distinct request waiting, never one per waiter. Removing a
waiter (served, cancelled, timed out) is O(1).

The queue is not thread-safe: :class:`~gleitzeit_llm.manager.OllamaPoolManager` holds its lock
around every call. Waking a waiter happens outside the lock (:meth:`Waiter.wake`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from gleitzeit_llm.errors import NoInstanceAvailableError
from gleitzeit_llm.routing.strategies import Route, RouteRequest

if TYPE_CHECKING:
    from gleitzeit_llm.manager import Lease

__all__ = ["SlotQueue", "Waiter"]


class Waiter:
    """Someone waiting for a free slot: an event-loop future or a thread event.

    The dispatcher sets ``lease`` (a slot handed over) or ``error`` (the request can no longer
    be served) under the pool lock, takes the waiter out of the queue, then wakes it.
    """

    __slots__ = ("attempt", "error", "event", "future", "lease", "loop", "request", "ticket")

    def __init__(self, request: RouteRequest, attempt: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.request = request
        self.attempt = attempt
        self.ticket = 0
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None
        self.event = threading.Event() if loop is None else None

    @property
    def decided(self) -> bool:
        return self.lease is not None or self.error is not None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
            return
        loop, future = self.loop, self.future
        if loop is None or future is None or loop.is_closed():
            return
        if asyncio._get_running_loop() is loop:
            _resolve(future)  # on the waiter's own loop: no self-pipe round trip
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


Serve = Callable[[Waiter], "Lease | Route"]


class SlotQueue:
    """Waiters in arrival order, grouped by request; see the module docstring for the rule."""

    def __init__(self) -> None:
        self._groups: dict[RouteRequest, OrderedDict[int, Waiter]] = {}
        self._tickets = itertools.count(1)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def push(self, waiter: Waiter) -> None:
        """Join at the tail."""
        waiter.ticket = next(self._tickets)
        self._groups.setdefault(waiter.request, OrderedDict())[waiter.ticket] = waiter
        self._size += 1

    def remove(self, waiter: Waiter) -> bool:
        """Leave the queue (O(1)); False when it was not in it (already served)."""
        group = self._groups.get(waiter.request)
        if group is None or group.pop(waiter.ticket, None) is None:
            return False
        self._size -= 1
        if not group:
            del self._groups[waiter.request]
        return True

    def change_request(self, waiter: Waiter, request: RouteRequest) -> None:
        """Give a queued waiter another request (affinity_wait ran out) without losing its place."""
        if not self.remove(waiter):
            waiter.request = request
            return
        waiter.request = request
        group = self._groups.setdefault(request, OrderedDict())
        group[waiter.ticket] = waiter
        self._size += 1
        if next(reversed(group)) != waiter.ticket:
            # Rare (a younger waiter got there first): restore ticket order in this group.
            ordered = sorted(group.items())
            group.clear()
            group.update(ordered)

    def drain(self) -> list[Waiter]:
        """Take every waiter out (the pool closed)."""
        waiters = [w for group in self._groups.values() for w in group.values()]
        self._groups.clear()
        self._size = 0
        return waiters

    def dispatch(self, serve: Serve, *, single: bool = False) -> list[Waiter]:
        """Hand free slots to waiters, oldest ticket first; returns the waiters to wake.

        ``serve`` tries to reserve a slot for one waiter's request. ``single``: one slot was
        released, so stop after the first hand-out. A waiter whose request no longer has any
        eligible instance is given that error (with everyone else in its group).
        """
        woken: list[Waiter] = []
        heads = sorted((next(iter(group.values())) for group in self._groups.values()), key=_ticket)
        for head in heads:
            group = self._groups.get(head.request)
            while group:
                waiter = next(iter(group.values()))
                if waiter.loop is not None and waiter.loop.is_closed():
                    self.remove(waiter)  # nobody is left to take a slot
                    continue
                result = serve(waiter)
                if not isinstance(result, Route):
                    waiter.lease = result
                    self.remove(waiter)
                    woken.append(waiter)
                    if single:
                        return woken
                    continue
                if not result.saturated:
                    reason = result.reason or "no instance can serve this request"
                    for other in list(group.values()):
                        other.error = NoInstanceAvailableError(reason)
                        self.remove(other)
                        woken.append(other)
                break
        return woken


def _ticket(waiter: Waiter) -> int:
    return waiter.ticket
