"""Affinity with bounded loads: prompt-prefix and session stickiness that never overloads.

Pure stickiness collapses under load (llm-d measured a prefix-only scorer at ~55% success under
load, prefix plus load at 100%; routing-science §8.3), so both kinds of affinity here pick only
among instances within a bounded share of the load, as consistent hashing with bounded loads
(CHWBL, KubeAI; Mirrokni et al.) does: an instance may take the call while its in-flight count
after it stays within ``ceil((1 + epsilon) x`` its share of the mean``)``, where the shares are
in proportion to ``max_concurrent``. The default epsilon, 0.25, is the low end of the 0.25-0.5
that routing-science §10 draws from CHWBL and SGLang's cache-aware router.

- ``session_id``: rendezvous (highest-random-weight) hashing of the session over the instances;
  when its instance is over the bound or full, the next one in the session's own order, so a
  spilled conversation lands on the same second choice every time.
- ``cache_aware``: the longest prefix match from :class:`~gleitzeit_llm.routing.prefix.PrefixIndex`
  when it covers at least :data:`MATCH_THRESHOLD` of the prompt, the fallback strategy (least
  loaded, or latency) among the best matches or, when nothing matches, among all within the bound,
  equals broken by :class:`CacheSlots` (where the new prompt evicts the least recently used slot).
- ``prefix_weight``: the match as a score term of any other strategy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gleitzeit_llm.routing.instance import OllamaInstance

__all__ = ["MATCH_THRESHOLD", "CacheSlots", "rendezvous", "within_bound"]

MATCH_THRESHOLD = 0.3
"""Share of the prompt's blocks a match must cover to steer cache_aware (SGLang's newer default
``cache_threshold``, 0.3): a short common system prompt alone does not herd new conversations."""


def within_bound(insts: Sequence[OllamaInstance], epsilon: float) -> list[OllamaInstance]:
    """The instances that stay within ``(1 + epsilon) x`` their share of the mean in-flight when
    they take one more call (all of them if, with unequal capacities, none would)."""
    total = 1
    capacity = 0
    for inst in insts:
        total += inst.in_flight
        capacity += inst.max_concurrent
    scale = (1.0 + epsilon) * total / capacity
    # The small tolerance keeps an exact product (1.25 x 8 / 4 = 2.5000000000000004) from
    # rounding up one whole slot.
    out = [i for i in insts if i.in_flight + 1 <= math.ceil(scale * i.max_concurrent - 1e-9)]
    return out or list(insts)


def rendezvous(session: str, instance_id: str) -> int:
    """The session's weight for an instance: the highest weight wins (stable across processes)."""
    # A mixing hash, not a CRC: a CRC is linear, so the orders it gave sessions would be related.
    digest = hashlib.blake2b(f"{session}\x00{instance_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class CacheSlots:
    """When each server's prompt-cache slots were last used, as far as our routing shows.

    Ollama keeps one prompt per parallel slot and a new prompt overwrites a slot, so where a new
    conversation goes decides which conversation loses its cache. Per (instance, model) this keeps
    up to ``max_concurrent`` entries, one per slot: the blocks of the last prompt routed to it and
    when. A prompt that shares at least :data:`MATCH_THRESHOLD` of its blocks with an entry (the
    next turn of that conversation) takes that entry over; another takes an unused entry or the
    least recently used one. The block-LRU :class:`~gleitzeit_llm.routing.prefix.PrefixIndex`
    cannot say this: once full, every instance's index is the same size, whoever still uses it.

    Entries of a server that restarted empty are never used again, so they soon are the oldest.
    Not thread-safe: the pool routes under its lock.
    """

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str | None], list[tuple[tuple[int, ...], float]]] = {}

    def record(
        self, instance_id: str, model: str | None, blocks: tuple[int, ...], slots: int, now: float
    ) -> None:
        """``blocks`` (a prompt's chained keys) were routed to the instance at ``now``."""
        table = self._tables.setdefault((instance_id, model), [])
        # Chained keys: equal keys at one position mean equal prompts up to there.
        probe = max(1, math.ceil(MATCH_THRESHOLD * len(blocks))) - 1
        key = blocks[probe]
        for n, (held, _) in enumerate(table):
            if len(held) > probe and held[probe] == key:
                table[n] = (blocks, now)
                return
        if len(table) < slots:
            table.append((blocks, now))
        else:
            table[min(range(len(table)), key=lambda n: table[n][1])] = (blocks, now)

    def oldest_use(self, instance_id: str, model: str | None, slots: int) -> float:
        """When the instance's least recently used slot was last used (-inf: a slot never used)."""
        table = self._tables.get((instance_id, model))
        if not table or len(table) < slots:
            return -math.inf
        return min(used for _, used in table)
