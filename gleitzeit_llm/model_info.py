"""``/api/show`` through the pool: which instance is asked, failover, and the answers kept.

A model's details (context length, capabilities, template) are the same on every instance that
has it, so one answer per model serves the whole pool and is kept for good; a lookup that found
no answer is not kept, the next one asks again. ``/api/show`` is metadata: it takes no slot and
feeds no breaker, and it reaches instances the way calls do, through the pool's
:class:`~gleitzeit_llm.connections.Connections` (real URL, headers, TLS).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from gleitzeit_llm.blocking import refuse_on_loop_thread
from gleitzeit_llm.errors import (
    AllInstancesFailedError,
    GleitzeitError,
    InstanceError,
    NoInstanceAvailableError,
)
from gleitzeit_llm.ollama import ShowResponse, Timeouts
from gleitzeit_llm.ollama.names import model_key

if TYPE_CHECKING:
    from gleitzeit_llm.connections import Connections
    from gleitzeit_llm.manager import OllamaPoolManager
    from gleitzeit_llm.routing.instance import OllamaInstance

__all__ = ["SHOW_FIRST_BYTE", "ModelInfo", "show_timeouts"]

#: ``/api/show`` never waits as long for its answer as a cold model load may.
SHOW_FIRST_BYTE = 30.0


def show_timeouts(timeouts: Timeouts) -> Timeouts:
    """The pool's timeouts for one ``/api/show``: the first byte capped, no total."""
    first_byte = min(timeouts.first_byte, SHOW_FIRST_BYTE) if timeouts.first_byte else SHOW_FIRST_BYTE
    return Timeouts(connect=timeouts.connect, first_byte=first_byte, idle=timeouts.idle)


class _Lookup:
    """One lookup of one model: the kept answer, or the instances to ask in turn and what each
    attempt raised."""

    __slots__ = ("_errors", "_info", "answer", "key", "model")

    def __init__(self, info: ModelInfo, model: str, key: str, answer: ShowResponse | None) -> None:
        self._info = info
        self.model = model
        self.key = key
        self.answer = answer
        self._errors: list[InstanceError] = []

    def instances(self) -> list[OllamaInstance]:
        """Instances that may have the model (none when an answer is kept): routable ones first,
        then those known to have it. Unroutable ones come last, not never: when nothing is
        healthy, try anyway."""
        if self.answer is not None:
            return []
        now = time.monotonic()  # the breakers' clock
        found = [i for i in self._info.manager.instances if not i.removed and i.may_serve(self.key)]
        return sorted(found, key=lambda i: (not i.routable(now), not i.is_installed(self.key)))

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """An instance's failure moves on to the next one; a caller's mistake (400) does not."""
        try:
            yield
        except InstanceError as exc:
            self._errors.append(exc)

    def found(self, answer: ShowResponse) -> ShowResponse:
        """Keep ``answer`` for every later lookup of this model."""
        with self._info.lock:
            self._info.answers[self.key] = answer
        return answer

    def result(self) -> ShowResponse:
        """The kept answer, or the error when no instance answered (not kept: the next lookup
        asks again)."""
        if self.answer is not None:
            return self.answer
        if not self._errors:
            raise NoInstanceAvailableError(f"/api/show {self.model!r}: no instance of the pool may have it")
        reasons = "; ".join(str(e) for e in self._errors)
        raise AllInstancesFailedError(
            f"/api/show {self.model!r} failed on every instance that may have it: {reasons}",
            errors=self._errors,
        )


class ModelInfo:
    """``/api/show`` answers of one pool, per model key (``llama3.2`` == ``llama3.2:latest``)."""

    def __init__(
        self,
        manager: OllamaPoolManager,
        connections: Connections,
        timeouts: Timeouts,
        closed: Callable[[], bool],
    ) -> None:
        self.manager = manager
        self.connections = connections
        self.timeouts = show_timeouts(timeouts)
        self.closed = closed
        self.answers: dict[str, ShowResponse] = {}
        self.lock = threading.Lock()

    def cached(self, model: str) -> ShowResponse | None:
        """The kept answer for ``model``, if any (no I/O; an invalid name has none)."""
        try:
            return self.answers.get(model_key(model))
        except GleitzeitError:
            return None

    def _lookup(self, model: str, *, blocking: bool) -> _Lookup:
        key = model_key(model)  # an invalid name is the caller's mistake, before any request
        answer = self.answers.get(key)
        if answer is None:
            if blocking:  # a kept answer is fine on any thread; a request must not block a loop
                refuse_on_loop_thread("show_sync(...)", "await provider.show(...)")
            if self.closed():
                raise GleitzeitError("this OllamaPoolProvider is closed")
        return _Lookup(self, model, key, answer)

    async def show(self, model: str) -> ShowResponse:
        """The kept answer, else ``/api/show`` on the first instance that answers."""
        lookup = self._lookup(model, blocking=False)
        for inst in lookup.instances():
            with lookup.attempt():
                transport = await self.connections.loop_transport(inst)
                return lookup.found(await transport.show(model, timeouts=self.timeouts))
        return lookup.result()

    def show_sync(self, model: str) -> ShowResponse:
        """Sync twin of :meth:`show`."""
        lookup = self._lookup(model, blocking=True)
        for inst in lookup.instances():
            with lookup.attempt():
                return lookup.found(self.connections.sync_transport(inst).show(model, timeouts=self.timeouts))
        return lookup.result()
