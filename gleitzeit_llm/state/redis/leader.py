"""Health-probe leadership: one process probes the pool's instances, the others read its results.

One Redis key holds the leader's token. A process that does not lead asks for it with a claim
script: ``SET key token PX ttl`` when nobody holds the key (``SET NX PX`` in one step), and a win
too when the key already holds *its* token (a reply it never read, or two of its ticks that
crossed: a bare ``SET NX`` would call that a loss, and no process would probe until the key
expired); the leader
renews it with a compare-and-renew script (``PEXPIRE`` only while the key still holds *its*
token, so a process that stalled past its lease never extends a successor's) and gives it back
on close with a compare-and-delete script. A leader that dies (SIGKILL, a lost host) stops
renewing: its key expires after at most ``ttl`` and the next process to ask takes over.

A process believes it leads only until ``ttl`` after it *sent* its last successful acquire or
renewal, measured on its own monotonic clock: the server's expiry starts later than that, so a
stalled leader stops probing before its key can pass to another process (two probing for a
moment would only cost one extra probe round, never a wrong state).

The caller drives it: :meth:`ProbeLeader.tick` (one round trip), or :meth:`ProbeLeader.queue` and
:meth:`ProbeLeader.settle` to ride on a pipeline the caller sends anyway (the shared store's
snapshot refresh), at least every ``ttl / 3`` seconds. Nothing here needs an event loop or a
thread of its own, and ``queue``/``settle`` work on sync and asyncio pipelines alike.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_LEADER_TTL", "LeaderElection", "ProbeLeader", "process_token"]

#: How long a leader's key lives without renewal, in seconds: the longest a pool goes without a
#: prober after its leader died (plus one health interval until the new leader's next round).
DEFAULT_LEADER_TTL = 5.0

# PEXPIRE only while the key holds our token: a leader that lost its key (it stalled past its TTL
# and another process took over) must not extend the new holder's lease.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# SET NX PX, or renew a key that already holds our token: either way this process leads.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""

# DEL only our own key: a leader closing after it lost the key leaves the successor in place.
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def process_token() -> str:
    """A token naming this process uniquely across hosts and restarts: ``host:pid:random``.

    The random part matters: a pid is reused after a restart, and two containers often share
    both a hostname pattern and pid 1.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def renew_token_after_fork(owner: Any) -> None:
    """Call ``owner.forked()`` in a forked child (gunicorn ``--preload`` builds the pool before it
    forks its workers), which gives it a token of its own: two processes under one token would
    each take the other's leadership, or facts, for their own."""
    ref = weakref.ref(owner)

    def renew() -> None:
        alive = ref()
        if alive is not None:
            alive.forked()

    os.register_at_fork(after_in_child=renew)


def _as_str(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class ProbeLeader:
    """Who runs the pool's health probes: one process at a time, through the key ``key``.

    ``ttl``: seconds the key lives without renewal (tick at least every ``ttl / 3``).
    ``token``: this process's name in the key (:func:`process_token` by default; a forked child
    takes a new one).
    ``clock``: the local monotonic clock (injectable for tests).

    >>> leader = ProbeLeader("gleitzeit:{pool}:leader", ttl=3.0)  # doctest: +SKIP
    >>> leader.tick(client)  # doctest: +SKIP
    True
    """

    __slots__ = ("__weakref__", "_clock", "_pending", "_sent_at", "_ttl_ms", "_until", "key", "token", "ttl")

    def __init__(
        self,
        key: str,
        *,
        ttl: float = DEFAULT_LEADER_TTL,
        token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"leader ttl must be a positive number of seconds, got {ttl!r}")
        self.key = key
        self.ttl = float(ttl)
        self._ttl_ms = max(1, int(ttl * 1000))
        self.token = token or process_token()
        self._clock = clock
        self._until = -math.inf  # local clock time until which this process surely holds the key
        self._sent_at = 0.0
        self._pending: str | None = None  # "renew" or "acquire": what queue() sent
        renew_token_after_fork(self)

    def forked(self) -> None:
        """In a forked child: a token of its own, and no leadership inherited from the parent."""
        self.token = process_token()
        self._until = -math.inf
        self._pending = None

    @property
    def leading(self) -> bool:
        """Whether this process holds the key now (as of its last successful tick)."""
        return self._clock() < self._until

    def queue(self, pipe: Any) -> None:
        """Add this tick's one command to ``pipe`` (a redis-py pipeline, sync or asyncio): renew
        while leading, else try to take the key. Pass its reply to :meth:`settle`."""
        self._sent_at = self._clock()
        if self._sent_at < self._until:
            pipe.eval(_RENEW, 1, self.key, self.token, self._ttl_ms)
            self._pending = "renew"
        else:
            pipe.eval(_CLAIM, 1, self.key, self.token, self._ttl_ms)
            self._pending = "acquire"

    def settle(self, reply: Any) -> bool:
        """Learn from the reply to the command :meth:`queue` added; returns :attr:`leading`.

        An exception as the reply (the command failed: Redis down, a timeout) changes nothing:
        a lease this process held runs out on its own clock, so it stops probing by itself
        within ``ttl`` if Redis stays away (the store then falls back to probing locally).
        """
        pending, self._pending = self._pending, None
        if pending is None or isinstance(reply, BaseException):
            return self.leading
        # The claim and the renew script answer 1 (ours) or 0 (another process holds the key).
        # Two ticks of this process that crossed share _pending: the one read second is
        # ignored, and whatever this one got wrong the next tick puts right.
        if reply:
            self._until = self._sent_at + self.ttl
        else:
            self._until = -math.inf
        return self.leading

    def tick(self, client: Any) -> bool:
        """Acquire or renew in one round trip through ``client`` (sync redis-py); returns
        :attr:`leading`. Redis errors propagate (the caller decides about falling back)."""
        pipe = client.pipeline(transaction=False)
        self.queue(pipe)
        try:
            (reply,) = pipe.execute()
        except BaseException:
            self._pending = None
            raise
        return self.settle(reply)

    def resign(self, client: Any) -> bool:
        """Give the key back if this process still holds it (compare-and-delete, one round trip),
        so a successor need not wait for the TTL. Returns whether a key was deleted."""
        self._until = -math.inf
        return bool(client.eval(_RESIGN, 1, self.key, self.token))

    def holder(self, client: Any) -> str | None:
        """The token of the process holding the key now, or None (one round trip)."""
        return _as_str(client.get(self.key))

    def __repr__(self) -> str:
        return f"ProbeLeader(key={self.key!r}, token={self.token!r}, leading={self.leading})"


class LeaderElection:
    """The store's :class:`~gleitzeit_llm.state.redis.hooks.ProbeElection`: a :class:`ProbeLeader`
    ticked on the store's snapshot refresh (:meth:`queue` / :meth:`settle`, no round trip of its
    own), given back on close.

    Before the first refresh has ticked it (a pool just starting: ``initialize()`` runs a probe
    round at once), :meth:`should_probe` ticks it itself, once, so the first process of a pool
    leads from its first round and the others do not probe.
    """

    def __init__(self, leader: ProbeLeader, client: Any) -> None:
        self.leader = leader
        self.client = client
        self._ticked = False

    def queue(self, pipe: Any) -> None:
        self.leader.queue(pipe)

    def settle(self, reply: Any) -> bool:
        self._ticked = True
        return self.leader.settle(reply)

    def should_probe(self) -> bool:
        if not self._ticked:
            self._ticked = True
            try:
                return self.leader.tick(self.client)
            except Exception:  # Redis unreachable: the store probes locally anyway
                return True
        return self.leader.leading

    def close(self) -> None:
        try:
            self.leader.resign(self.client)
        except Exception:  # Redis gone: the key expires after its TTL
            return

    def __repr__(self) -> str:
        return f"LeaderElection({self.leader!r})"
