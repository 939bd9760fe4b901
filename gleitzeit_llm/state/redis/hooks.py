"""Where more shared facts plug into the Redis store, without editing it.

The store (:class:`~gleitzeit_llm.state.redis.store.RedisState`) shares leases and breakers
itself. Everything else a pool learns (latency estimates, residency, models missing, busy
windows, health results) is a :class:`SharedFacts`, and who runs the health probes is a
:class:`ProbeElection`. The store calls them at fixed points, each inside a round trip it makes
anyway (``pipe`` is a redis-py pipeline; commands added to it go out with the store's own):

* release: ``facts.on_release(pipe, inst, observation, transitions, wall_now)``, after the local
  rules ran (``transitions`` is what they changed), in the release's round trip (the replies of
  the commands it adds are not read);
* a health probe's result: ``facts.on_probe(pipe, inst, result, wall_now)``, one round trip
  (none when nothing was added; replies not read);
* every snapshot refresh: ``facts.read(pipe, instance_ids)`` queues reads after the store's,
  then ``facts.apply(replies, instances, now, wall_now)`` gets exactly the replies of those reads
  (an error reply arrives as its exception object; under the pool's lock) and returns, per
  instance id, the :class:`Transitions` it made; the pool acts on them (events, router caches,
  waking waiters);
* each health round: ``election.should_probe()``; False skips the round in this process (a
  leader probes for the pool). While Redis is down every process probes.

Several :class:`SharedFacts` share the store's one slot through :class:`FactsChain` (the learned
facts of :mod:`.facts` and the prompt-prefix index of :mod:`.prefixes`).

``now`` is the pool's clock (monotonic, what handles hold); ``wall_now`` is ``time.time()``,
the only clock that means the same in every process and host.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gleitzeit_llm.routing.health import ProbeResult
    from gleitzeit_llm.routing.instance import OllamaInstance
    from gleitzeit_llm.routing.learning import Observation, Transitions
    from gleitzeit_llm.state.redis.keys import Keys

__all__ = ["AlwaysProbe", "FactsChain", "NoFacts", "ProbeElection", "SharedFacts"]


class SharedFacts(Protocol):
    """Facts shared through the store's round trips (see the module docstring). The bodies
    here are the no-op defaults; an implementation subclasses this or just matches it."""

    def on_release(
        self,
        pipe: Any,
        inst: OllamaInstance,
        observation: Observation,
        transitions: Transitions,
        wall_now: float,
    ) -> None:
        return None

    def on_probe(self, pipe: Any, inst: OllamaInstance, result: ProbeResult, wall_now: float) -> None:
        return None

    def read(self, pipe: Any, instance_ids: Sequence[str]) -> None:
        return None

    def apply(
        self, replies: Sequence[Any], instances: Mapping[str, OllamaInstance], now: float, wall_now: float
    ) -> dict[str, Transitions]:
        return {}


class ProbeElection(Protocol):
    """Whether this process runs the pool's health probes this round."""

    def should_probe(self) -> bool: ...

    def close(self) -> None: ...


class NoFacts(SharedFacts):
    """The default: nothing beyond leases and breakers is shared."""

    def __init__(self, keys: Keys | None = None) -> None:
        self.keys = keys


class AlwaysProbe:
    """The default: every process probes (as without shared state)."""

    def should_probe(self) -> bool:
        return True

    def close(self) -> None:
        return None


class FactsChain(SharedFacts):
    """Several :class:`SharedFacts` in one slot of the store, called in order; each
    :meth:`apply` gets exactly the replies of the reads its own :meth:`read` queued."""

    def __init__(self, *parts: SharedFacts) -> None:
        self.parts = parts
        # Per thread: a refresh reads and applies on one thread (a test may call one directly).
        self._counts = threading.local()

    def on_release(self, pipe: Any, *args: Any) -> None:
        for part in self.parts:
            part.on_release(pipe, *args)

    def on_probe(self, pipe: Any, *args: Any) -> None:
        for part in self.parts:
            part.on_probe(pipe, *args)

    def read(self, pipe: Any, instance_ids: Sequence[str]) -> None:
        counts = []
        for part in self.parts:
            before = len(pipe)
            part.read(pipe, instance_ids)
            counts.append(len(pipe) - before)
        self._counts.last = counts

    def apply(
        self, replies: Sequence[Any], instances: Mapping[str, OllamaInstance], now: float, wall_now: float
    ) -> dict[str, Transitions]:
        changed: dict[str, Transitions] = {}
        start = 0
        for part, count in zip(self.parts, self._counts.last, strict=True):
            changed.update(part.apply(replies[start : start + count], instances, now, wall_now))
            start += count
        return changed
