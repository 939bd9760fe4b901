"""The Redis key layout of one pool, all inside one hash tag (one Redis Cluster slot).

========================================= ====== ==================================================
key                                       type   holds
========================================= ====== ==================================================
``gleitzeit:{<ns>}:leases:<instance>``    zset   one member per slot held, ``<lease id>|<model>``,
                                                 scored by its expiry (wall clock, ms)
``gleitzeit:{<ns>}:models:<instance>``    hash   model -> slots held for it (fields at 0 removed)
``gleitzeit:{<ns>}:breaker:<instance>``   hash   ``s`` open/half_open (absent: closed), ``r`` retry
                                                 at (ms), ``o`` open time (s), ``why``, ``p`` probes
                                                 admitted, ``h`` half-open since (ms)
``gleitzeit:{<ns>}:waiting``               zset   the processes with callers waiting for a slot
                                                 (process token, scored by expiry, wall clock ms)
``gleitzeit:{<ns>}:released`` (channel)   pubsub ``<process> <instance> <count> <model> <n>``
                                                 on a release while another process waits
========================================= ====== ==================================================

Keys disappear when empty (no lease, no model held, breaker closed); an open breaker's hash
expires on its own after twice its open time plus the lease TTL, ``waiting`` one lease TTL after
the last registration.

The learned facts (:mod:`.facts`, ``facts:<instance>``), the probe leader (:mod:`.leader`) and
the prompt-prefix index (:mod:`.prefixes`: ``prefix:<instance>|<model>``, ``prefix-seq``,
``prefix-models``) live in the same hash tag, each documented in its module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gleitzeit_llm.ollama.urls import redact_url

if TYPE_CHECKING:
    from gleitzeit_llm.config import InstanceConfig

__all__ = ["Keys", "default_namespace"]

PREFIX = "gleitzeit"


def default_namespace(instances: Iterable[InstanceConfig]) -> str:
    """A hash of the pool's instance set: ids and URLs (credentials left out), sorted.

    The same configuration in every process meets in one namespace; two different pools on one
    Redis never share a key. Adding or removing an instance in the configuration moves the pool
    to a new namespace (the old keys expire with their leases).
    """
    lines = sorted(f"{i.id}={redact_url(i.url)}" for i in instances)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


class Keys:
    """The key names of one namespace."""

    __slots__ = ("_base", "_scripted", "channel", "namespace", "waiting")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._base = f"{PREFIX}:{{{namespace}}}:"  # {...}: the hash tag Redis Cluster slots by
        self.channel = self._base + "released"
        self.waiting = self._base + "waiting"
        self._scripted: dict[str, list[str]] = {}

    def leases(self, instance_id: str) -> str:
        return f"{self._base}leases:{instance_id}"

    def models(self, instance_id: str) -> str:
        return f"{self._base}models:{instance_id}"

    def breaker(self, instance_id: str) -> str:
        return f"{self._base}breaker:{instance_id}"

    def instance(self, instance_id: str) -> tuple[str, str, str]:
        """The three keys of one instance, in the order the scripts take them."""
        return self.leases(instance_id), self.models(instance_id), self.breaker(instance_id)

    def scripted(self, instance_id: str) -> list[str]:
        """The keys the acquire and release scripts take: the instance's three, then ``waiting``."""
        keys = self._scripted.get(instance_id)
        if keys is None:
            keys = self._scripted[instance_id] = [*self.instance(instance_id), self.waiting]
        return keys

    def prefix(self, instance_id: str, model: str | None) -> str:
        """The prompt-prefix zset of one instance and model (:mod:`.prefixes`)."""
        return f"{self._base}prefix:{instance_id}|{model or ''}"

    def key(self, *parts: str) -> str:
        """Another key of this namespace (for :mod:`.hooks` implementations): same hash tag."""
        return self._base + ":".join(parts)

    def __repr__(self) -> str:
        return f"Keys({self.namespace!r})"
