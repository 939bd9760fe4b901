"""The state seam: every read and write of what the pool knows about its instances goes here.

A :class:`StateStore` holds, per instance: the in-flight leases (per instance and per
(instance, model)), the circuit breaker, the health state, the latency estimates (peak-EWMA of
time to first token and time per token), model residency, the models learned missing (404s)
and the busy window a 503/429 asked for (Retry-After). :class:`~gleitzeit_llm.state.local.LocalState`
keeps them in this process; a store shared through Redis implements the same methods.

Reads: routing reads *handles*, never the store. :meth:`StateStore.create` returns one
:class:`~gleitzeit_llm.routing.instance.OllamaInstance` per instance, and the router reads its
attributes (``in_flight``, ``state``, ``busy_until``, ``breaker.allows``, ``metrics.ttft.estimate``,
...), which is what keeps a routing decision free of I/O, locks and allocations. Locally the
handle *is* the state. A remote store keeps the handles as a snapshot: refreshed in the
background (one pipelined read per refresh, bounded staleness), updated by the answer of each
call below, and the routing epoch moved when a refresh changes what is routable.

Writes: the calls below, each documented with the round trips a remote store needs. Each is
atomic on its own; the manager calls them under its lock (which also guards its queue and router),
so :class:`LocalState` needs no lock of its own, and a remote store's atomicity comes from its
server (a Lua script or function per call).

What stays out of the store (local to each process, see docs/architecture.md): the instance set
(configuration, the same in every process), request counters and windows for status, the
router's caches, round-robin cursor, RNG and expected-output-length estimate, the slot queue's
waiters (threads and futures of this process) and the health monitor's transports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from gleitzeit_llm.routing.learning import NOTHING, Transitions

if TYPE_CHECKING:
    from gleitzeit_llm.config import InstanceConfig
    from gleitzeit_llm.routing.epoch import Epoch
    from gleitzeit_llm.routing.health import ProbeResult
    from gleitzeit_llm.routing.instance import OllamaInstance
    from gleitzeit_llm.routing.learning import Observation

__all__ = ["FULL", "GRANTED", "PROBES_TAKEN", "Grant", "StateStore"]


class Grant(NamedTuple):
    """The answer to :meth:`StateStore.acquire`.

    ``admitted``: the slot is taken. ``probe``: admitted by a half-open breaker (the outcome is
    its verdict). ``transitions``: what admission changed (an open breaker turning half-open).
    ``reason``: why not admitted.
    """

    admitted: bool
    probe: bool = False
    transitions: Transitions = NOTHING
    reason: str = ""


# The common answers, shared: acquiring allocates nothing in the usual case.
GRANTED = Grant(True)
FULL = Grant(False, reason="all full")
PROBES_TAKEN = Grant(False, reason="half-open probe limit reached")


@runtime_checkable
class StateStore(Protocol):
    """Where the pool's learned state lives; see the module docstring.

    Round trips (RT) are for a remote store (Redis); the local store makes none.
    """

    epoch: Epoch
    """The routing epoch: moves whenever something that decides routability changed (a health
    state, a breaker, a busy window). The router caches its health filters until it moves."""

    def create(self, config: InstanceConfig) -> OllamaInstance:
        """The handle of one instance (with its breaker), for the router to read.

        Remote: 0 RT (keys are written on first use; the next snapshot refresh fills the handle).
        """
        ...

    def acquire(self, inst: OllamaInstance, model: str | None, now: float, panic: bool) -> Grant:
        """Take one slot on ``inst`` and one for (``inst``, ``model``), atomically, if the instance
        is below ``max_concurrent`` (and, with adaptive concurrency, ``model`` below its learned
        limit, ``inst.limits``) and its breaker admits a request (``panic``: bypass the breaker,
        nothing healthy was left). Never exceeds the cap, never leaves a count negative.

        Remote: 1 RT (a script: check the cap and the breaker's half-open budget, increment both
        counters, record the lease with a TTL that the holder renews while the call runs).
        """
        ...

    def release(self, inst: OllamaInstance, obs: Observation, now: float) -> Transitions:
        """Give back the slot taken by :meth:`acquire` and learn from how the attempt ended:
        counters, latency estimates, breaker, health, residency, a missing model, a busy window
        (see :func:`~gleitzeit_llm.routing.learning.record_outcome`). Returns what changed.

        Remote: 1 RT (one script: decrement both counters and delete the lease, then apply the
        observation's facts: breaker counters and state, health, EWMA merge, residency, the
        missing model, the busy window's expiry; it returns the transitions it made).
        """
        ...

    def record_probe(self, inst: OllamaInstance, result: ProbeResult, now: float) -> Transitions:
        """Learn from a health check round on ``inst`` (health, installed, resident and missing
        models, version); returns what changed.

        Remote: 1 RT (one script per instance, or one pipeline for a whole round; only the
        elected prober writes).
        """
        ...

    def wait_starts(self) -> bool:
        """A caller is about to wait for a slot: make sure a slot freed anywhere will wake it.
        Returns True when the counts were read afresh (route again before waiting).

        Remote: 1 RT when the process is not yet registered as waiting, else 0.
        """
        ...

    def should_probe(self) -> bool:
        """Whether this process runs the next health round (a shared store elects one prober).

        Remote: 0 RT (the election renews itself in the background).
        """
        ...

    def own_in_flight(self, inst: OllamaInstance) -> int:
        """Slots this process holds on ``inst`` (a removed instance is dropped when they are
        done); the handle's ``in_flight`` is the pool-wide count with a shared store.

        Remote: 0 RT.
        """
        ...
