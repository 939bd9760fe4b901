"""Code that runs in the child processes of the shared-state tests (multiprocessing spawn).

Kept out of the test modules so a spawned child imports only this and the library, not pytest.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gleitzeit_llm.state.redis.leader import ProbeLeader


def client(url: str) -> redis.Redis:
    """A client that fails fast: no retries with backoff, short socket timeouts."""
    return redis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_timeout=2.0, socket_connect_timeout=2.0
    )


def lead_until_killed(url: str, key: str, ttl: float, token: str, leading: Any, stop: Any) -> None:
    """Tick a :class:`ProbeLeader` every ``ttl / 10`` s; set ``leading`` once it leads. Runs until
    ``stop.value`` is set (then resigns) or the process is killed.

    ``stop`` is a shared flag, not an Event: a process killed while waiting on an Event leaves
    the Event's condition counting a sleeper that never wakes, and ``set()`` hangs."""
    leader = ProbeLeader(key, ttl=ttl, token=token)
    with client(url) as c:
        while not stop.value:
            if leader.tick(c):
                leading.set()
            time.sleep(ttl / 10)  # the renewal cadence (a refresh loop's period)
        leader.resign(c)


def now() -> float:
    return time.monotonic()
