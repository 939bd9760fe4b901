"""The link to Redis: the client (short timeouts, no retries), whether the link is up, the one
warning per outage and the reconnect attempts (in the background, never on the call path)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.ollama.urls import redact_store_url

if TYPE_CHECKING:
    from gleitzeit_llm.config import SharedStateConfig

__all__ = ["LINK_ERRORS", "Link", "build_client"]

_log = logging.getLogger("gleitzeit_llm.shared_state")


def _link_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisClusterException, RedisError

    # RedisError covers connection, timeout, auth, READONLY (a replica after a failover),
    # CLUSTERDOWN and busy-script answers; RedisClusterException (not a RedisError) a cluster
    # client that reaches no node or finds a slot unserved. Each means "no shared state right
    # now", never a failed call.
    return (RedisError, RedisClusterException, OSError)


LINK_ERRORS: tuple[type[BaseException], ...] = _link_errors()


def build_client(config: SharedStateConfig, slot_key: str | None = None) -> Any:
    """A redis-py client for ``config.url``: socket timeouts from the configuration and no
    retries (redis-py retries with backoff by default; a down Redis must cost one timeout, then
    the pool runs on local state).

    With ``config.cluster`` a :class:`~.cluster.ClusterClient` (redis-py's cluster client, built
    on first use); ``slot_key``, a key of the pool's namespace, is what its reconnect probe reads.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "socket_timeout": config.timeout,
        "socket_connect_timeout": config.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "decode_responses": True,
        "client_name": "gleitzeit-llm",
    }
    if config.cluster:
        from gleitzeit_llm.state.redis.cluster import ClusterClient

        return ClusterClient(lambda: _cluster(config.url, options), slot_key)
    return redis.Redis.from_url(config.url, retry_on_timeout=False, **options)


def _cluster(url: str, options: dict[str, Any]) -> Any:
    """redis-py's cluster client: no retries at the cluster level either (``retry`` there counts
    the attempts after a connection error or ``CLUSTERDOWN``; before redis-py 6 that was
    ``cluster_error_retry_attempts``, 3 by default, with a slot-map reload and backoff each)."""
    import redis
    from redis.cluster import RedisCluster

    if int(redis.__version__.split(".")[0]) < 6:
        options = {**options, "cluster_error_retry_attempts": 0}
    return RedisCluster.from_url(url, **options)


class Link:
    """Up or down. :meth:`down` logs one warning per outage; :meth:`due` says when the
    background thread should try again; :meth:`up` logs the recovery."""

    def __init__(self, config: SharedStateConfig, namespace: str) -> None:
        self.url = redact_store_url(config.url)
        self.namespace = namespace
        self.cluster = config.cluster
        self.reconnect_interval = config.reconnect_interval
        self.is_up = True  # optimistic: the first call finds out
        self.since = time.monotonic()
        self.last_error: str | None = None
        self.outages = 0
        self._next_try = 0.0
        self._lock = threading.Lock()

    def down(self, exc: BaseException) -> bool:
        """Mark the link down after ``exc``; True when it was up (the caller switches to local)."""
        with self._lock:
            # redis-py error texts name host and port, never the password; redact anyway.
            self.last_error = redact_store_url(f"{type(exc).__name__}: {exc}")
            self._next_try = time.monotonic() + self.reconnect_interval
            if not self.is_up:
                return False
            self.is_up = False
            self.since = time.monotonic()
            self.outages += 1
        _log.warning(
            "shared state at %s unreachable (%s): this process runs on local state until it "
            "answers again (retrying every %gs)",
            self.url,
            self.last_error,
            self.reconnect_interval,
        )
        return True

    def due(self) -> bool:
        """Whether a reconnect attempt is due now (while down)."""
        return not self.is_up and time.monotonic() >= self._next_try

    def failed_again(self, exc: BaseException) -> None:
        with self._lock:
            self.last_error = redact_store_url(f"{type(exc).__name__}: {exc}")
            self._next_try = time.monotonic() + self.reconnect_interval

    def up(self) -> None:
        with self._lock:
            if self.is_up:
                return
            self.is_up = True
            self.since = time.monotonic()
        _log.info("shared state at %s answers again: sharing resumed", self.url)

    def status(self) -> dict[str, Any]:
        """What status() shows: never the credentials."""
        return {
            "backend": "redis",
            "cluster": self.cluster,
            "up": self.is_up,
            "url": self.url,
            "namespace": self.namespace,
            "for": round(time.monotonic() - self.since, 3),
            "last_error": self.last_error,
            "outages": self.outages,
        }
