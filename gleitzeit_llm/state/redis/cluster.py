"""The client for a Redis Cluster (``shared_state: {url: ..., cluster: true}``): redis-py's
:class:`redis.cluster.RedisCluster`, built on first use.

redis-py's cluster client connects while it is constructed (it reads the slot map from the seed
node), so building it when the pool is made would make a cluster that is down at start-up a
failed pool instead of a pool on local state. :class:`ClusterClient` builds it on the first
command instead, inside the store's error handling; a failed build is a link error like any
other and the next reconnect attempt builds again.

Every key of a pool carries one hash tag (:mod:`.keys`), so each script, pipeline and read goes
to the one node that holds the pool's slot; ``MOVED`` and ``ASK`` after a resharding or a
failover are followed by redis-py. ``PUBLISH`` from inside a script reaches subscribers on every
node (the cluster bus broadcasts it), so the wake-up subscriber may listen on any of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

__all__ = ["ClusterClient", "DeferredPipeline"]


class DeferredPipeline:
    """A pipeline for a cluster client not built yet: records the commands and sends them through
    a real pipeline in :meth:`execute` (which builds the client, or raises the link error)."""

    def __init__(self, owner: ClusterClient) -> None:
        self._owner = owner
        self._queued: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., DeferredPipeline]:
        def queue(*args: Any, **kwargs: Any) -> DeferredPipeline:
            self._queued.append((name, args, kwargs))
            return self

        return queue

    def __len__(self) -> int:
        return len(self._queued)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        queued, self._queued = self._queued, []
        pipe = self._owner.real_pipeline()
        for name, args, kwargs in queued:
            getattr(pipe, name)(*args, **kwargs)
        return list(pipe.execute(raise_on_error=raise_on_error))


class ClusterClient:
    """A :class:`redis.cluster.RedisCluster` made by ``factory`` on the first command; every
    attribute is the real client's.

    ``slot_key``: a key in the pool's hash slot. :meth:`ping` (the store's reconnect probe) reads
    it, so a reconnect succeeds only once the node holding the pool's slot serves it again: a
    ``PING`` answered by any other node, or by a restarted node still refusing keys
    (``CLUSTERDOWN``), would end the fall-back too early.
    """

    def __init__(self, factory: Callable[[], Any], slot_key: str | None = None) -> None:
        self._factory = factory
        self._slot_key = slot_key
        self._client: Any = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The redis-py cluster client (built now if it was not; raises when no node answers)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._closed:  # a thread still finishing must not open connections again
                    from redis.exceptions import ConnectionError as Closed

                    raise Closed("the shared-state client is closed")
                if self._client is None:
                    self._client = self._factory()
                client = self._client
        return client

    @property
    def built(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        # Only names not found on this class: evalsha, script_load, eval, get, pubsub, ...
        return getattr(self.client, name)

    def pipeline(self, transaction: bool = False, shard_hint: Any = None) -> Any:
        """A pipeline; before the first connection a :class:`DeferredPipeline` (never raises:
        the store builds its pipelines outside its error handling)."""
        if self._client is None:
            return DeferredPipeline(self)
        return self.real_pipeline()

    def real_pipeline(self) -> Any:
        """redis-py's cluster pipeline (non-transactional), with scripts let through.

        redis-py blocks ``evalsha`` in cluster pipelines (a script's keys might span slots) and
        its ``eval`` there means something else; a pool's keys never span slots (one hash tag),
        so both are queued as the plain commands, routed by their keys like any other (a
        ``NOSCRIPT`` reply is the store's to handle, as on one server).
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha = partial(self._queue_script, pipe, "EVALSHA")
        pipe.eval = partial(self._queue_script, pipe, "EVAL")
        pipe.script_load = partial(self._queue_script_load, pipe)
        return pipe

    def _queue_script_load(self, pipe: Any, source: str) -> Any:
        """Queue ``SCRIPT LOAD`` (blocked in redis-py's cluster pipelines too) for the node of the
        pool's slot, the one its ``EVALSHA`` commands go to; any node without a ``slot_key``."""
        target = None
        if self._slot_key is not None:
            try:
                target = self.client.get_node_from_key(self._slot_key)
            except (RedisError, RedisClusterException, OSError):  # never raise while queueing
                target = None
        if target is None:
            return pipe.execute_command("SCRIPT LOAD", source, target_nodes=self.client.get_default_node())
        return pipe.execute_command("SCRIPT LOAD", source, target_nodes=target)

    def _queue_script(self, pipe: Any, command: str, script: str, numkeys: int, *args: Any) -> Any:
        """Queue ``EVAL``/``EVALSHA`` aimed at the node of its first key. Without a target, redis-py
        asks the server for a script's keys (``COMMAND GETKEYS``: one more round trip per
        script); a stale target answers ``MOVED``, which the pipeline follows."""
        target = None
        if int(numkeys) > 0:
            try:
                target = self.client.get_node_from_key(args[0])
            except (RedisError, RedisClusterException, OSError):  # never raise while queueing:
                # execute() routes it then, or fails inside the store's error handling
                target = None
        if target is None:
            return pipe.execute_command(command, script, numkeys, *args)
        return pipe.execute_command(command, script, numkeys, *args, target_nodes=target)

    def ping(self) -> bool:
        """Whether the node holding the pool's slot serves keys (any node's ``PING`` without a
        ``slot_key``); raises the link error otherwise."""
        if self._slot_key is None:
            return bool(self.client.ping())
        self.client.exists(self._slot_key)
        return True

    def close(self) -> None:
        with self._lock:
            client, self._client, self._closed = self._client, None, True
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"ClusterClient(built={self.built})"
