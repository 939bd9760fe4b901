"""The state seam shared through Redis (or Valkey): docs/scale-out.md.

Imported only when a pool has ``shared_state`` (redis-py is the optional extra
``gleitzeit-llm[redis]``). :func:`open_shared_state` builds the store for a pool configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gleitzeit_llm.errors import ConfigError

if TYPE_CHECKING:
    from gleitzeit_llm.config import PoolConfig
    from gleitzeit_llm.state.redis.store import RedisState

__all__ = ["open_shared_state"]


def open_shared_state(config: PoolConfig, clock: Callable[[], float] = time.monotonic) -> RedisState:
    """The Redis store for ``config.shared_state`` (no connection is made here)."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError(
            "shared_state needs the Redis client, which is not installed: "
            "pip install 'gleitzeit-llm[redis]' (or remove shared_state to run on local state)",
            field="shared_state",
            hint="pip install 'gleitzeit-llm[redis]'",
        ) from None
    from gleitzeit_llm.state.redis.connection import build_client
    from gleitzeit_llm.state.redis.facts import SharedFacts
    from gleitzeit_llm.state.redis.hooks import FactsChain
    from gleitzeit_llm.state.redis.keys import Keys, default_namespace
    from gleitzeit_llm.state.redis.leader import LeaderElection, ProbeLeader
    from gleitzeit_llm.state.redis.prefixes import SharedPrefixes
    from gleitzeit_llm.state.redis.store import RedisState

    shared = config.shared_state
    assert shared is not None
    # Learned facts and the probe leadership ride on the store's round trips (hooks.py); the
    # leadership is a lease like a slot's: a dead leader's runs out after lease_ttl.
    keys = Keys(shared.namespace or default_namespace(config.instances))
    client = build_client(shared, slot_key=keys.key("leader"))
    election = LeaderElection(ProbeLeader(keys.key("leader"), ttl=shared.lease_ttl), client)
    facts = SharedFacts(keys.key("facts"), clock=clock, election=election)
    # The prompt-prefix index rides on the snapshot refresh (prefixes.py).
    prefixes = SharedPrefixes(keys, config.load_balancing.prefix_cache_tokens, clock=clock)
    return RedisState(
        shared,
        config.load_balancing,
        config.instances,
        clock,
        client=client,
        facts=FactsChain(facts, prefixes),
        election=election,
        prefix_index=prefixes.index,
    )
