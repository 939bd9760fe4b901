"""The prompt-prefix index of ``cache_aware`` (and of ``prefix_weight``), shared through Redis.

Each process keeps its own :class:`~gleitzeit_llm.routing.prefix.PrefixIndex` and routes on it
alone, as without shared state; what one process records there ("prompt P went to instance X,
model M") reaches the others without a round trip of its own:

* :class:`SharedPrefixIndex` records as the local index does, and also puts the block keys that
  Redis lacks (or has not seen touched for :data:`TOUCH_AFTER` seconds) into an outbox (a dict
  update under a lock of its own): nothing more on the call path;
* the next snapshot refresh (every ``refresh_interval``, 100 ms by default) writes the outbox,
  one script per (instance, model), in the pipelined read it makes anyway
  (:meth:`SharedPrefixes.read`), and reads what every process wrote since its last read;
  :meth:`SharedPrefixes.apply` merges that into the local index (idempotent: a key it holds
  moves to the recent end of its LRU).

So another process knows a routing at most two refresh intervals later (the writer's refresh,
then the reader's), about 200 ms with the defaults.

Key layout (all inside the pool's hash tag, :mod:`.keys`):

============================================ ====== ==============================================
key                                          type   holds
============================================ ====== ==============================================
``gleitzeit:{<ns>}:prefix:<instance>|<model>`` zset the block keys (11 hex digits) routed to
                                                    the instance and model, scored by the write
                                                    sequence; trimmed to the local bound
                                                    (``max_concurrent x prefix_cache_tokens``)
``gleitzeit:{<ns>}:prefix-seq``              string the write sequence (``INCRBY``; started at
                                                    the writer's wall clock in microseconds, so
                                                    it only grows, also after Redis restarted
                                                    empty)
``gleitzeit:{<ns>}:prefix-models``           set    the models written (a reader reads each
                                                    instance's zset of each)
============================================ ====== ==============================================

Every write renews the three keys' expiry (``ttl``, an hour by default): a pool that stopped
leaves nothing behind.

Why a sequence and not a time: a reader asks for what is new since its last read (one small
script: the zset's top score and the members above its watermark, atomically); a score the
writer stamped could land in Redis after a reader read past it (a pipeline in flight, clocks of
two hosts) and be missed for good, a number the script takes at write time cannot. The score
also orders the LRU: within one prompt the last block is written first, so a prompt's head is
its most recent part and trimming takes tails first, as the local index does.

Write volume: a key is 11 hex digits (41 bits: 9 of block position, 32 of the chained CRC),
packed in one argument; a reader cannot infer a prompt's earlier keys from its last (a CRC chain
runs one way), so each block is written once. A routed prompt writes only the keys Redis lacks,
plus the whole prompt again when its keys were last written (or learned) more than
:data:`TOUCH_AFTER` ago, so Redis's LRU order follows use and a hot prefix is not trimmed while
it is in use. Measured (docs/scale-out.md): a new 3,000-token prompt (187 blocks) writes about
2.3 KB and each process reads about 3.4 KB of it; its next turn within 2 s writes 16 new blocks,
about 450 B; at the bound a zset holds about 100 B per block.

Redis down: the outbox keeps collecting (bounded per (instance, model) by the same LRU bound)
and is written with the first refresh after Redis returns; a refresh whose reply never came
puts its writes back. The writes are idempotent (``ZADD`` of the same member moves its score).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from gleitzeit_llm.routing.prefix import PrefixIndex, PromptPrefix, capacity_blocks
from gleitzeit_llm.state.redis.facts import DEFAULT_FACTS_TTL
from gleitzeit_llm.state.redis.leader import renew_token_after_fork
from gleitzeit_llm.state.redis.scripts import Script

if TYPE_CHECKING:
    from gleitzeit_llm.routing.instance import OllamaInstance
    from gleitzeit_llm.routing.learning import Transitions
    from gleitzeit_llm.state.redis.keys import Keys

__all__ = ["DEFAULT_PREFIX_TTL", "KEY_CHARS", "TOUCH_AFTER", "SharedPrefixIndex", "SharedPrefixes"]

#: Seconds the shared index outlives its last write (as the learned facts).
DEFAULT_PREFIX_TTL = DEFAULT_FACTS_TTL
#: Seconds after which a block key this process routed again is written again (its LRU touch).
TOUCH_AFTER = 2.0
#: Hex digits of one block key in Redis (a key has 41 bits: position << 32 | CRC-32).
KEY_CHARS = 11
# ZADD arguments per redis.call in the script (Lua's unpack takes a few thousand values).
_CHUNK = 2000

# KEYS: the (instance, model) zset, the sequence, the model set. ARGV: capacity, ttl (ms),
# model, wall clock (us, the sequence's start if absent), the block keys oldest first, packed
# KEY_CHARS hex digits each. Returns the sequence after the write.
_WRITE = Script(
    "prefix-write",
    """
local zset, seq, models = KEYS[1], KEYS[2], KEYS[3]
local packed = ARGV[5]
local n = #packed / KEY_CHARS
if redis.call('EXISTS', seq) == 0 then redis.call('SET', seq, ARGV[4]) end
local top = redis.call('INCRBY', seq, n)
local first = top - n
local args = {}
for i = 1, n do
  args[2 * i - 1] = first + i
  args[2 * i] = string.sub(packed, KEY_CHARS * (i - 1) + 1, KEY_CHARS * i)
end
for i = 1, #args, CHUNK do
  redis.call('ZADD', zset, unpack(args, i, math.min(i + CHUNK - 1, #args)))
end
redis.call('ZREMRANGEBYRANK', zset, 0, -tonumber(ARGV[1]) - 1)
redis.call('SADD', models, ARGV[3])
redis.call('PEXPIRE', zset, ARGV[2])
redis.call('PEXPIRE', seq, ARGV[2])
redis.call('PEXPIRE', models, ARGV[2])
return top
""".replace("KEY_CHARS", str(KEY_CHARS)).replace("CHUNK", str(_CHUNK)),
)

# KEYS: one (instance, model) zset. ARGV: the lower bound (``-inf`` or ``(<watermark>``).
# Returns {} for an empty zset, else {its top score, the members above the bound, oldest first}:
# the new watermark and what is new, in one atomic read.
_READ = Script(
    "prefix-read",
    """
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #top == 0 then return {} end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], top[2])
table.insert(members, 1, top[2])
return members
""",
)
_SCRIPTS = (_WRITE, _READ)

Pair = tuple[str, str | None]  # (instance id, model)


def pack(keys: Iterable[int]) -> str:
    """Block keys as the script takes them: :data:`KEY_CHARS` hex digits each."""
    return "".join([format(key, "011x") for key in keys])


class _Outbox:
    """Keys to write, per (instance, model): oldest first, bounded like the index."""

    __slots__ = ("capacity", "keys")

    def __init__(self, capacity: int) -> None:
        self.keys: OrderedDict[int, None] = OrderedDict()
        self.capacity = capacity

    def add(self, keys: Iterable[int], capacity: int) -> None:
        table = self.keys
        for key in keys:
            table[key] = None
            table.move_to_end(key)
        self.capacity = capacity
        while len(table) > capacity:
            table.popitem(last=False)


class SharedPrefixIndex(PrefixIndex):
    """A :class:`PrefixIndex` whose records also go into an outbox for Redis, and which merges
    what other processes recorded (:meth:`merge`).

    The table values are the time (``clock``) each key was last written to Redis or learned
    from it: a key routed again within :data:`TOUCH_AFTER` of that is not written again.
    ``record`` and ``merge`` run under the pool's lock, as the local index's calls do; the
    outbox has a lock of its own (the refresh thread takes it without the pool's lock).
    """

    __slots__ = ("__weakref__", "_clock", "_outbox", "_outbox_lock", "touch_after")

    def __init__(self, clock: Callable[[], float] = time.monotonic, touch_after: float = TOUCH_AFTER) -> None:
        super().__init__()
        self._clock = clock
        self.touch_after = touch_after
        self._outbox: dict[Pair, _Outbox] = {}
        self._outbox_lock = threading.Lock()
        renew_token_after_fork(self)

    def record(self, instance_id: str, model: str | None, prefix: PromptPrefix, capacity: int) -> None:
        table = self._tables.get((instance_id, model))
        if table is None:
            table = self._tables[(instance_id, model)] = OrderedDict()
        now = self._clock()
        stale = now - self.touch_after
        touch = table.move_to_end
        send: list[int] = []
        # The last block first, as the local index does: the head ends up the most recent.
        for key in reversed(prefix.blocks):
            stamp = table.get(key)
            if stamp is None or stamp < stale:
                table[key] = now
                send.append(key)
            touch(key)
        while len(table) > capacity:
            table.popitem(last=False)
        if send:
            self.post((instance_id, model), send, capacity)

    def post(self, pair: Pair, keys: Sequence[int], capacity: int) -> None:
        """Queue ``keys`` (oldest first) for the next write of ``pair``."""
        with self._outbox_lock:
            box = self._outbox.get(pair)
            if box is None:
                box = self._outbox[pair] = _Outbox(capacity)
            box.add(keys, capacity)

    def take(self) -> dict[Pair, _Outbox]:
        """Everything queued, emptied (the refresh writes it)."""
        with self._outbox_lock:
            taken, self._outbox = self._outbox, {}
        return taken

    def give_back(self, pending: Mapping[Pair, _Outbox]) -> None:
        """Writes that did not land: queued again, before what was recorded since."""
        with self._outbox_lock:
            for pair, old in pending.items():
                newer = self._outbox.get(pair)
                if newer is not None:
                    old.add(newer.keys, newer.capacity)
                self._outbox[pair] = old

    def pending(self) -> int:
        """Keys waiting to be written."""
        with self._outbox_lock:
            return sum(len(box.keys) for box in self._outbox.values())

    def merge(self, instance_id: str, model: str | None, keys: Iterable[int], capacity: int) -> None:
        """Take keys another process recorded (oldest first): each becomes the most recent."""
        table = self._tables.get((instance_id, model))
        if table is None:
            table = self._tables[(instance_id, model)] = OrderedDict()
        now = self._clock()
        touch = table.move_to_end
        for key in keys:
            table[key] = now
            touch(key)
        while len(table) > capacity:
            table.popitem(last=False)

    def forget(self, instance_id: str) -> None:
        super().forget(instance_id)
        with self._outbox_lock:
            for pair in [pair for pair in self._outbox if pair[0] == instance_id]:
                del self._outbox[pair]

    def forked(self) -> None:
        """In a forked child: a fresh outbox lock (another thread may have held the parent's)."""
        self._outbox_lock = threading.Lock()


class _Plan:
    """One refresh's commands, in the order queued: the writes (with what they carried), then
    the model set, then one range read per (instance, model)."""

    __slots__ = ("load", "reads", "writes")

    def __init__(self, load: int, writes: dict[Pair, _Outbox], reads: list[Pair]) -> None:
        self.load = load
        self.writes = writes
        self.reads = reads


class SharedPrefixes:
    """The prefix index's part of the shared state: a :class:`~gleitzeit_llm.state.redis.hooks.SharedFacts`
    that writes and reads in the snapshot refresh only (see the module docstring).

    ``keys``: the pool's key names; ``cache_tokens``: ``load_balancing.prefix_cache_tokens`` (the
    bound of merged tables, with each instance's ``max_concurrent``); ``ttl``: seconds the keys
    outlive their last write.
    """

    def __init__(
        self,
        keys: Keys,
        cache_tokens: int,
        *,
        ttl: float = DEFAULT_PREFIX_TTL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        index: SharedPrefixIndex | None = None,
    ) -> None:
        self.keys = keys
        self.index = SharedPrefixIndex(clock) if index is None else index
        self.cache_tokens = cache_tokens
        self._ttl_ms = max(1, int(ttl * 1000))
        self._wall = wall
        self._seq = keys.key("prefix-seq")
        self._models_key = keys.key("prefix-models")
        self._models: set[str] = set()  # models ("" for none) with a zset, from the last read
        self._seen: dict[Pair, int] = {}  # (instance, model) -> sequence number last read
        self._load = True  # load the scripts with the next refresh (the first, or Redis forgot them)
        # The plan of the refresh in flight, per thread: read and apply of one refresh run on
        # one thread, and a refresh called directly (tests) must not take another's replies.
        self._plans = threading.local()

    def zset(self, instance_id: str, model: str | None) -> str:
        """The zset of one instance and model."""
        return self.keys.prefix(instance_id, model)

    # -- the SharedFacts hooks ----------------------------------------------------------------

    def on_release(self, pipe: Any, *args: Any, **kwargs: Any) -> None:
        return None  # recorded at routing time, written by the refresh

    def on_probe(self, pipe: Any, *args: Any) -> None:
        return None

    def read(self, pipe: Any, instance_ids: Sequence[str]) -> int:
        """Queue the outbox's writes, then the reads of what is new since the last read."""
        lost: _Plan | None = getattr(self._plans, "plan", None)
        if lost is not None and lost.writes:  # the last refresh's reply never came
            self.index.give_back(lost.writes)
        before = len(pipe)
        writes = self.index.take()
        load = len(_SCRIPTS) if self._load else 0
        for script in _SCRIPTS[:load]:
            pipe.script_load(script.source)
        if writes:
            wall_us = str(int(self._wall() * 1_000_000))
            seq, models = self._seq, self._models_key
            for (instance_id, model), box in writes.items():
                keys = [self.zset(instance_id, model), seq, models]
                args = [box.capacity, self._ttl_ms, model or "", wall_us, pack(box.keys)]
                _WRITE.queue(pipe, keys, args)
        pipe.smembers(self._models_key)
        model_names = self._models | {model or "" for _, model in writes}
        reads: list[Pair] = []
        for instance_id in instance_ids:
            for name in model_names:
                pair = (instance_id, name or None)
                seen = self._seen.get(pair)
                _READ.queue(pipe, [self.zset(*pair)], ["-inf" if seen is None else f"({seen}"])
                reads.append(pair)
        self._plans.plan = _Plan(load, writes, reads)
        return len(pipe) - before

    def apply(
        self,
        replies: Sequence[Any],
        instances: Sequence[OllamaInstance] | Mapping[str, OllamaInstance],
        now: float,
        wall_now: float,
    ) -> dict[str, Transitions]:
        """Merge what was read into the index (under the pool's lock); no transitions."""
        plan: _Plan | None = getattr(self._plans, "plan", None)
        self._plans.plan = None
        if plan is None:
            return {}
        if len(replies) != plan.load + len(plan.writes) + 1 + len(plan.reads):
            self.index.give_back(plan.writes)  # not this read's replies: write them again
            return {}
        replies = replies[plan.load :]
        failed: dict[Pair, _Outbox] = {}
        forgot = False  # Redis answered NOSCRIPT: load the scripts again with the next refresh
        for (pair, box), reply in zip(plan.writes.items(), replies, strict=False):
            if isinstance(reply, BaseException):
                failed[pair] = box
                forgot = forgot or isinstance(reply, NoScriptError)
        if failed:
            self.index.give_back(failed)
        replies = replies[len(plan.writes) :]
        if not isinstance(replies[0], BaseException):
            self._models = set(replies[0])
        by_id = instances if isinstance(instances, Mapping) else {inst.id: inst for inst in instances}
        for pair, reply in zip(plan.reads, replies[1:], strict=True):
            if isinstance(reply, BaseException):
                forgot = forgot or isinstance(reply, NoScriptError)
                continue
            inst = by_id.get(pair[0])
            if not reply or inst is None or inst.removed:
                continue
            self._seen[pair] = int(float(reply[0]))
            capacity = capacity_blocks(inst.max_concurrent, self.cache_tokens)
            self.index.merge(pair[0], pair[1], [int(member, 16) for member in reply[1:]], capacity)
        self._load = forgot
        return {}

    def forget(self, instance_id: str) -> None:
        """Drop what this process remembers of a removed instance (its zsets expire by themselves)."""
        for pair in [pair for pair in self._seen if pair[0] == instance_id]:
            del self._seen[pair]
        self.index.forget(instance_id)
