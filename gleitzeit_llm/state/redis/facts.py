"""What the pool learns about its instances, shared through Redis: latency, residency, missing
models, busy windows and the health checks of the probing process.

Each process keeps its own handles (:class:`~gleitzeit_llm.routing.instance.OllamaInstance`) and
learns on them by the local rules (:mod:`gleitzeit_llm.routing.learning`). :class:`SharedFacts`
adds to that, without a round trip of its own:

* :meth:`SharedFacts.on_release` and :meth:`SharedFacts.on_probe` add a few write commands to the
  pipeline the store sends anyway (the release script's round trip, the probe round's);
* :meth:`SharedFacts.read` adds one ``HGETALL`` per instance to the snapshot refresh's pipelined
  read, and :meth:`SharedFacts.apply` folds the answers into the handles, returning the
  :class:`~gleitzeit_llm.routing.learning.Transitions` they made (health changes, busy windows,
  missing models), which the manager acts on as on its own.

Key layout: one hash per instance, ``gleitzeit:{<namespace>}:facts:<instance id>`` (the prefix
given carries the pool's hash tag, so a Cluster keeps a pool in one slot), living ``ttl`` after
its last write. Its fields:

============== ============================================== ====================================
field          value                                          written by
============== ============================================== ====================================
``l:<token>``  ``ttft ttft_at tpot tpot_at mass`` (``-``:     each process, for itself, on a
               none), one process's latency estimates         release that taught it latency (at
                                                              most every 50 ms, unless a peak)
``r:<model>``  ``until stamp``: resident until (``inf``:      whoever served the model (its
               kept loaded, ``0``: unloaded)                  keep_alive), at most every few s
``m:<spell>``  ``stamp``: this spelling answered 404          whoever got the 404
``b``          ``until token reason``: a busy window          whoever got the 503/429
``p``          JSON: the last health check, and the health    the probing process (the leader)
               state and probe counts it left the prober in
============== ============================================== ====================================

All times in Redis are wall-clock seconds (``time.time()``): processes, let alone hosts, do not
share a monotonic clock. Each side converts at its edge (``local = now + (wall - wall_now)``), so
only the hosts' clock *offset* (NTP: milliseconds) enters a window, never its monotonic origin.

Merging latency (one estimate per instance from every process's observations): each process
writes its own peak-EWMA estimates with the time of their last sample and its *mass*, a count of
samples decayed with the same time constant (``mass = mass * exp(-dt / decay) + 1``). A reader
decays each estimate and mass to now (as :meth:`~gleitzeit_llm.routing.ewma.PeakEwma.value_at`
does) and takes the mass-weighted mean, but never less than the freshest estimate. The weighted
mean is what one EWMA over all processes' samples would hold for a steady latency (a process
that sent ten times the requests counts ten times); the floor keeps the *peak* in peak-EWMA: a
slowdown one process just saw reaches every process at once instead of being averaged away by
the others' older, faster samples, while fast samples that came *after* a peak pull the mean
down as they do in one process. Entries with no sample for ``horizon`` seconds (a process that
exited) are ignored and deleted. The merged value goes into the handle (``metrics.ttft``,
``metrics.tpot``), which is what the router reads; each process keeps its own estimates apart
(what it writes), so no process re-counts the merged value as its own.

The estimates are per instance, as the router's are (the local rule learns one time to first
token and one time per token per instance); a per-(instance, model) estimate needs a per-model
handle first, and would be one more field prefix here.

Residency, missing spellings and busy windows: last writer wins per field, as the local rules
overwrite. A passing health check (``/api/tags``, ``/api/ps``) is the authority at its time:
residency and missing entries stamped before it are superseded by it (and deleted), later ones
are added on top, exactly as a process's own calls after a probe round are.

Health: the probing process writes each result with the health state and probe counts its own
rules left it in; every other process applies the result through the same rules
(:func:`~gleitzeit_llm.routing.learning.record_probe`, with its probe counts set to the
prober's), and then takes the prober's state if its own passive signals had moved it elsewhere:
after each health round every process agrees on every instance's health.

Not thread-safe by itself: the store calls it under the pool's lock, as it calls the local rules.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from gleitzeit_llm.routing.ewma import PeakEwma
from gleitzeit_llm.routing.health import ProbeResult
from gleitzeit_llm.routing.instance import DEFAULT_RESIDENCY
from gleitzeit_llm.routing.learning import NOTHING, Change, Outcome, Transitions, record_probe
from gleitzeit_llm.routing.transitions import RESETS_PROBE_FAILURES, InstanceState
from gleitzeit_llm.state.redis.leader import LeaderElection, process_token, renew_token_after_fork

if TYPE_CHECKING:
    from gleitzeit_llm.routing.instance import OllamaInstance
    from gleitzeit_llm.routing.learning import Observation

__all__ = ["DEFAULT_FACTS_TTL", "LatencyView", "SharedFacts", "latency_samples", "merge_latency"]

#: Seconds a pool's facts outlive their last write (a pool that stopped leaves nothing behind).
DEFAULT_FACTS_TTL = 3600.0
# A process's latency entry is rewritten at most this often (seconds), unless its estimate
# jumped by _PEAK: readers refresh every 100-250 ms, and a write per call would cost every call.
_LATENCY_EVERY = 0.05
_PEAK = 1.25
# A residency entry is rewritten only when it moved this much (or a probe round came between):
# every success extends it by the time since the last, which is not worth a write per call.
_RESIDENCY_SLACK = 5.0
_LAT, _RES, _MISS, _BUSY, _PROBE = "l:", "r:", "m:", "b", "p"
_NONE = "-"
# Seconds a write may take to land (a pipeline in flight): a read sent before it lacks it.
_IN_FLIGHT = 2.0

# Delete fields only while they still hold the value found stale: another process may have
# rewritten one since (a model served again), and its fresh value must survive the clean-up.
_DELETE_UNCHANGED = """
for i = 1, #ARGV, 2 do
    if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
        redis.call('HDEL', KEYS[1], ARGV[i])
    end
end
return 0
"""


class LatencyView(NamedTuple):
    """One process's latency estimates of one instance, as written (wall-clock times).

    ``mass``: its decayed sample count as of ``ttft_at``.
    """

    ttft: float | None
    ttft_at: float
    tpot: float | None
    tpot_at: float
    mass: float


def latency_samples(obs: Observation, current_ttft: float | None) -> tuple[float | None, float | None]:
    """The (time to first token, time per output token) samples the local rule learns from
    ``obs`` (:func:`~gleitzeit_llm.routing.learning.record_outcome`), None where it learns none.

    ``current_ttft``: the estimate before this attempt (a failure is learned as at least twice it).
    """
    outcome = obs.outcome
    if outcome == Outcome.SUCCESS:
        if obs.cold_load:  # a model load says nothing about the instance's speed
            return None, None
        duration = obs.duration
        first = obs.ttft if obs.ttft is not None else duration
        tokens = obs.output_tokens
        tpot = None
        if tokens:
            if obs.eval_duration:
                tpot = obs.eval_duration / tokens
            elif tokens > 1 and duration > first and not obs.caller_paced:
                tpot = (duration - first) / (tokens - 1)
        return first, tpot
    if outcome == Outcome.FAILURE:
        return max(obs.duration, 2 * (current_ttft or 0.0), 1.0), None
    return None, None


def _merge_one(values: Iterable[tuple[float, float, float]], wall_now: float, decay: float) -> float | None:
    """Mass-weighted mean of decayed estimates, floored by the freshest: (estimate, at, mass)."""
    num = den = 0.0
    freshest_at, freshest = -math.inf, None
    for estimate, at, mass in values:
        factor = math.exp(-max(wall_now - at, 0.0) / decay)
        decayed = estimate * factor
        weight = mass * factor
        num += weight * decayed
        den += weight
        if at > freshest_at:
            freshest_at, freshest = at, decayed
    if freshest is None:
        return None
    return max(num / den, freshest) if den > 0.0 else freshest


def merge_latency(
    views: Iterable[LatencyView], wall_now: float, decay: float
) -> tuple[float | None, float | None]:
    """One (time to first token, time per token) estimate at ``wall_now`` from every process's
    view of one instance (see the module docstring); None where nobody has a sample."""
    views = list(views)
    ttft = _merge_one(((v.ttft, v.ttft_at, v.mass) for v in views if v.ttft is not None), wall_now, decay)
    tpot = _merge_one(
        # A view's mass is as of its ttft sample: decayed to the tpot sample's time, the weights
        # of both estimates compare like for like.
        (
            (v.tpot, v.tpot_at, v.mass * math.exp(-max(v.tpot_at - v.ttft_at, 0.0) / decay))
            for v in views
            if v.tpot is not None
        ),
        wall_now,
        decay,
    )
    return ttft, tpot


class _Own:
    """This process's own latency estimates of one instance (wall-clock times): what it writes."""

    __slots__ = ("decay", "mass", "mass_at", "tpot", "ttft", "written_at", "written_ttft")

    def __init__(self, decay: float, min_weight: float) -> None:
        self.decay = decay
        self.ttft = PeakEwma(decay, min_weight)
        self.tpot = PeakEwma(decay, min_weight)
        self.mass = 0.0
        self.mass_at = 0.0
        self.written_at = -math.inf
        self.written_ttft = 0.0

    def due(self, wall_now: float) -> bool:
        """Whether to write now: the last write is older than _LATENCY_EVERY, or a peak."""
        estimate = self.ttft.estimate or 0.0
        if wall_now - self.written_at < _LATENCY_EVERY and estimate <= self.written_ttft * _PEAK:
            return False
        self.written_at, self.written_ttft = wall_now, estimate
        return True

    def learn(self, obs: Observation, wall_now: float) -> bool:
        # The current estimate matters only to a failure's sample: no exp for a success.
        current = self.ttft.value_at(wall_now) if obs.outcome == Outcome.FAILURE else None
        ttft, tpot = latency_samples(obs, current)
        if ttft is None:
            return False
        self.ttft.observe(ttft, wall_now)
        if tpot is not None:
            self.tpot.observe(tpot, wall_now)
        self.mass = self.mass * math.exp(-max(wall_now - self.mass_at, 0.0) / self.decay) + 1.0
        self.mass_at = wall_now
        return True

    def view(self) -> LatencyView:
        ttft, tpot = self.ttft, self.tpot
        return LatencyView(ttft.estimate, ttft.observed_at, tpot.estimate, tpot.observed_at, self.mass)

    def encode(self) -> str:
        v = self.view()
        return f"{_num(v.ttft)} {v.ttft_at!r} {_num(v.tpot)} {v.tpot_at!r} {v.mass!r}"


def _num(value: float | None) -> str:
    return _NONE if value is None else repr(value)


def _float(text: str) -> float | None:
    return None if text == _NONE else float(text)


def _decode_latency(text: str) -> LatencyView | None:
    try:
        ttft, ttft_at, tpot, tpot_at, mass = text.split()
        return LatencyView(_float(ttft), float(ttft_at), _float(tpot), float(tpot_at), float(mass))
    except ValueError:  # written by another version: ignored, never fatal
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Seen:
    """What this process last took from (or wrote to) one instance's hash."""

    __slots__ = ("busy", "missing", "probe_id", "probe_ok_at", "residency", "written_missing")

    def __init__(self) -> None:
        self.probe_id: str | None = None
        self.probe_ok_at = -math.inf  # wall time of the last passing health check applied
        self.missing: set[str] = set()  # spellings found in the shared hash by the last read
        self.written_missing: dict[str, float] = {}  # spellings this process wrote -> when
        self.residency: dict[str, tuple[float, float]] = {}  # model -> (until, stamp) written
        self.busy: str | None = None  # the busy field as last applied


class _Reading:
    """Folding one instance's hash, field by field, into its handle (one :meth:`SharedFacts.apply`)."""

    __slots__ = (
        "busy_until",
        "horizon",
        "inst",
        "now",
        "seen",
        "shared_missing",
        "stale",
        "token",
        "views",
        "wall_now",
    )

    def __init__(
        self, token: str, inst: OllamaInstance, seen: _Seen, now: float, wall_now: float, horizon: float
    ) -> None:
        self.token = token
        self.inst = inst
        self.seen = seen
        self.now = now
        self.wall_now = wall_now
        self.horizon = horizon
        self.views: list[LatencyView] = []
        self.shared_missing: set[str] = set()
        self.stale: dict[str, str] = {}  # fields to delete (if unchanged) with the next read
        self.busy_until: float | None = None  # a busy window this reading set

    def field(self, name: str, value: str) -> None:
        if name.startswith(_LAT):
            self.latency(name, value)
        elif name.startswith(_RES):
            self.residency(name[len(_RES) :], name, value)
        elif name.startswith(_MISS):
            if float(value) > self.seen.probe_ok_at:
                self.shared_missing.add(name[len(_MISS) :])
            else:
                self.stale[name] = value  # a later health check listed what is installed
        elif name == _BUSY:
            self.busy(value)

    def latency(self, name: str, value: str) -> None:
        if name[len(_LAT) :] == self.token:
            return  # our own: the in-memory one is at least as fresh
        view = _decode_latency(value)
        if view is None or self.wall_now - max(view.ttft_at, view.tpot_at) > self.horizon:
            self.stale[name] = value  # a process gone quiet (or exited): its weight is nil
        else:
            self.views.append(view)

    def residency(self, model: str, name: str, value: str) -> None:
        until_text, _, stamp_text = value.partition(" ")
        until, stamp = float(until_text), float(stamp_text)
        seen, inst = self.seen, self.inst
        if seen.residency.get(model, (until, stamp)) != (until, stamp):
            del seen.residency[model]  # another process wrote since: our next success writes again
        if stamp <= seen.probe_ok_at:
            self.stale[name] = value  # a later /api/ps said what is resident
        elif until == 0.0:  # served with keep_alive 0: unloaded after the call
            inst.loaded_models.pop(model, None)
        elif until == math.inf:
            inst.loaded_models[model] = math.inf
        elif until <= self.wall_now:
            self.stale[name] = value
        else:
            local = self.now + (until - self.wall_now)
            if local > inst.loaded_models.get(model, -math.inf):
                inst.loaded_models[model] = local

    def busy(self, value: str) -> None:
        until_text, token, reason = [*value.split(" ", 2), "", ""][:3]
        until = float(until_text)
        if until <= self.wall_now:
            self.stale[_BUSY] = value
        elif token != self.token and value != self.seen.busy:
            self.seen.busy = value  # applied once: each set moves the routing epoch
            local = self.now + (until - self.wall_now)
            inst = self.inst
            if local > inst.busy_until:
                inst.busy_reason = reason or "busy"
                inst.busy_until = local
                self.busy_until = local

    def missing_models(self) -> tuple[set[str], set[str]]:
        """Apply the missing spellings read; returns (added, removed).

        Added: what others learned. Removed: what an earlier read found, or what we wrote a
        while ago, and this read does not (un-marked in the pool since: it answered somewhere).
        Our own fresh writes do not count as removed: a read sent before they landed lacks them.
        """
        seen, inst, shared = self.seen, self.inst, self.shared_missing
        cutoff = self.wall_now - _IN_FLIGHT
        written_long_ago = {s for s, at in seen.written_missing.items() if at < cutoff}
        added = shared - inst.missing_models
        gone = ((seen.missing | written_long_ago) - shared) & inst.missing_models
        inst.missing_models |= added
        inst.missing_models -= gone
        seen.missing = shared
        for spelling in shared | written_long_ago:
            seen.written_missing.pop(spelling, None)
        return added, gone


class SharedFacts:
    """The learned facts of one pool, shared through Redis (see the module docstring).

    ``prefix``: the key prefix of the pool's facts, with its hash tag (``gleitzeit:{ns}:facts``).
    ``token``: this process's name (its latency field, its writes it need not read back);
    :func:`~gleitzeit_llm.state.redis.leader.process_token` by default, a new one in a forked child.
    ``ttl``: seconds the facts outlive their last write. ``horizon``: seconds after which another
    process's latency estimate is dropped (default: six decay constants, when its weight is
    below 0.3 %). ``clock``: the pool's clock (what the handles' times are on).
    ``election``: the probe leadership, ticked on the same refresh (its command goes first).

    >>> facts = SharedFacts("gleitzeit:{pool}:facts", token="host:1:ab")
    >>> facts.key("gpu-1")
    'gleitzeit:{pool}:facts:gpu-1'
    """

    def __init__(
        self,
        prefix: str,
        token: str | None = None,
        *,
        ttl: float = DEFAULT_FACTS_TTL,
        horizon: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        election: LeaderElection | None = None,
    ) -> None:
        self.prefix = prefix
        self.token = token or process_token()
        self._clock = clock
        self.election = election
        self.ttl = ttl
        self._ttl_ms = max(1, int(ttl * 1000))
        self._horizon = horizon
        self._own: dict[str, _Own] = {}
        self._seen: dict[str, _Seen] = {}
        self._expiry_set: dict[str, float] = {}  # instance id -> wall time its hash's TTL was set
        self._stale: dict[str, dict[str, str]] = {}  # instance id -> field -> value, to delete
        self._probes = 0
        renew_token_after_fork(self)

    def forked(self) -> None:
        """In a forked child: a token of its own (its latency field, its probe ids), and none of
        the parent's own estimates (they are the parent's, written under the parent's token)."""
        self.token = process_token()
        self._own = {}

    def key(self, instance_id: str) -> str:
        """The hash of one instance's facts."""
        return f"{self.prefix}:{instance_id}"

    def forget(self, instance_id: str) -> None:
        """Drop what this process remembers of a removed instance (the hash expires by itself)."""
        for table in (self._own, self._seen, self._expiry_set, self._stale):
            table.pop(instance_id, None)

    # -- writing (commands added to the caller's pipeline) ------------------------------------

    def on_release(
        self,
        pipe: Any,
        inst: OllamaInstance,
        obs: Observation,
        transitions: Transitions,
        wall_now: float,
        now: float | None = None,
    ) -> None:
        """Add to ``pipe`` what the finished attempt ``obs`` taught (after the local rules ran on
        ``inst`` and made ``transitions``): latency, residency, a missing spelling, a busy window.
        ``now``: the pool's clock (the one ``transitions.busy_until`` is on; read when not given)."""
        key = self.key(inst.id)
        wrote = False
        outcome = obs.outcome
        if outcome == Outcome.SUCCESS or outcome == Outcome.FAILURE:
            own = self._own.get(inst.id)
            if own is None:
                ewma = inst.metrics.ttft
                own = self._own[inst.id] = _Own(ewma.decay, ewma.min_weight)
            if own.learn(obs, wall_now) and own.due(wall_now):
                pipe.hset(key, _LAT + self.token, own.encode())
                wrote = True
            if outcome == Outcome.SUCCESS and obs.model is not None:
                wrote = self._served(pipe, key, inst, obs, wall_now) or wrote
        elif outcome == Outcome.MODEL_MISSING and transitions.filters_changed:
            seen = self._seen_of(inst.id)
            for spelling in inst.missing_models - seen.missing - seen.written_missing.keys():
                pipe.hset(key, _MISS + spelling, repr(wall_now))
                seen.written_missing[spelling] = wall_now
                wrote = True
        elif outcome == Outcome.BUSY and transitions.busy_until is not None:
            until = wall_now + (transitions.busy_until - (self._clock() if now is None else now))
            pipe.hset(key, _BUSY, f"{until!r} {self.token} {inst.busy_reason or 'busy'}")
            wrote = True
        if wrote:
            self._keep(pipe, key, inst.id, wall_now)

    def _served(self, pipe: Any, key: str, inst: OllamaInstance, obs: Observation, wall_now: float) -> bool:
        model = obs.model
        assert model is not None
        seen = self._seen_of(inst.id)
        wrote = False
        spelling = obs.spelling if obs.spelling is not None else model
        if spelling in seen.missing or spelling in seen.written_missing:
            # The local rule un-marked this spelling (it answered): so does the pool.
            pipe.hdel(key, _MISS + spelling)
            seen.missing.discard(spelling)
            seen.written_missing.pop(spelling, None)
            wrote = True
        keep_alive = DEFAULT_RESIDENCY if obs.keep_alive is None else obs.keep_alive
        until = math.inf if keep_alive < 0 else (0.0 if keep_alive == 0 else wall_now + keep_alive)
        last = seen.residency.get(model)
        if (
            last is not None
            and last[1] > seen.probe_ok_at  # written after the last probe round superseded it
            and (last[0] == until or (0.0 < last[0] < until < last[0] + _RESIDENCY_SLACK))
        ):
            return wrote
        pipe.hset(key, _RES + model, f"{until!r} {wall_now!r}")
        seen.residency[model] = (until, wall_now)
        return True

    def on_probe(self, pipe: Any, inst: OllamaInstance, result: ProbeResult, wall_now: float) -> None:
        """Add to ``pipe`` the health check ``result`` on ``inst`` (after the local rules applied
        it), with the state and probe counts they left, for the other processes to apply."""
        self._probes += 1
        probe_id = f"{self.token}#{self._probes}"
        loaded = {
            model: "inf" if math.isinf(left) else wall_now + left for model, left in result.loaded.items()
        }
        record = {
            "id": probe_id,
            "at": wall_now,
            "ok": result.ok,
            "latency": result.latency,
            "version": result.version,
            "installed": sorted(result.installed) if result.installed is not None else None,
            "loaded": loaded,
            "error": result.error,
            "passes": inst.consecutive_probe_successes,
            "failures": inst.consecutive_probe_failures,
            "state": inst.state.value,
        }
        key = self.key(inst.id)
        pipe.hset(key, _PROBE, json.dumps(record, separators=(",", ":")))
        seen = self._seen_of(inst.id)
        seen.probe_id = probe_id
        if result.ok:
            seen.probe_ok_at = wall_now
            # /api/tags is the authority: the local rule cleared them too.
            seen.missing.clear()
            seen.written_missing.clear()
        self._keep(pipe, key, inst.id, wall_now)

    def _keep(self, pipe: Any, key: str, instance_id: str, wall_now: float) -> None:
        # The hash lives ttl after its last write; renewing the TTL on every write would cost a
        # command per call, so it is renewed once a tenth of the TTL has passed.
        if wall_now - self._expiry_set.get(instance_id, -math.inf) > self.ttl / 10:
            pipe.pexpire(key, self._ttl_ms)
            self._expiry_set[instance_id] = wall_now

    def _seen_of(self, instance_id: str) -> _Seen:
        seen = self._seen.get(instance_id)
        if seen is None:
            seen = self._seen[instance_id] = _Seen()
        return seen

    # -- reading (the snapshot refresh) -------------------------------------------------------

    def read(self, pipe: Any, instance_ids: Sequence[str]) -> int:
        """Add to ``pipe``: the election's tick (with an election), one ``HGETALL`` per instance
        (in the order given), then the clean-up of fields found stale last time. Returns how many
        commands were added; :meth:`apply` takes the replies from the first on."""
        if self.election is not None:
            self.election.queue(pipe)
        for instance_id in instance_ids:
            pipe.hgetall(self.key(instance_id))
        added = len(instance_ids) + (self.election is not None)
        if self._stale:
            for instance_id, fields in self._stale.items():
                args = [part for item in fields.items() for part in item]
                pipe.eval(_DELETE_UNCHANGED, 1, self.key(instance_id), *args)
                added += 1
            self._stale = {}
        return added

    def apply(
        self,
        replies: Sequence[Any],
        instances: Sequence[OllamaInstance] | Mapping[str, OllamaInstance],
        now: float,
        wall_now: float,
    ) -> dict[str, Transitions]:
        """Fold the replies of :meth:`read` into the handles (``instances`` in the order read, or
        by id in that order); returns, per instance id, the transitions that made (only where
        something changed). A reply that is an exception (that command failed) leaves its
        instance as it was."""
        if self.election is not None:
            self.election.settle(replies[0])
            replies = replies[1:]
        handles = list(instances.values()) if isinstance(instances, Mapping) else instances
        changed: dict[str, Transitions] = {}
        for inst, reply in zip(handles, replies[: len(handles)], strict=True):
            if isinstance(reply, BaseException) or inst.removed:
                continue
            fields = {_text(k): _text(v) for k, v in reply.items()} if reply else {}
            transitions = self._apply_one(inst, fields, now, wall_now)
            if transitions is not NOTHING:
                changed[inst.id] = transitions
        return changed

    def _apply_one(
        self, inst: OllamaInstance, fields: Mapping[str, str], now: float, wall_now: float
    ) -> Transitions:
        seen = self._seen_of(inst.id)
        changes: tuple[Change, ...] = ()
        filters_changed = False
        probe = fields.get(_PROBE)
        if probe is not None:
            moved = self._apply_probe(inst, seen, probe, now)
            if moved is not None:
                changes, filters_changed = moved.changes, moved.filters_changed
        horizon = self._horizon if self._horizon is not None else 6 * inst.metrics.ttft.decay
        reading = _Reading(self.token, inst, seen, now, wall_now, horizon)
        for name, value in fields.items():
            try:
                reading.field(name, value)
            except (ValueError, IndexError):  # written by another version: skipped, never fatal
                continue
        added, gone = reading.missing_models()
        model_missing = bool(added)
        filters_changed = filters_changed or bool(added or gone)
        self._apply_latency(inst, reading.views, now, wall_now)
        if reading.stale:
            self._stale[inst.id] = reading.stale
        busy_until = reading.busy_until
        if not (changes or filters_changed or busy_until is not None):
            return NOTHING
        return Transitions(
            changes, busy_until=busy_until, filters_changed=filters_changed, model_missing=model_missing
        )

    def _apply_probe(self, inst: OllamaInstance, seen: _Seen, text: str, now: float) -> Transitions | None:
        try:
            record = json.loads(text)
            probe_id, at, ok = str(record["id"]), float(record["at"]), bool(record["ok"])
            state = InstanceState(record["state"])
        except (ValueError, KeyError, TypeError):
            return None
        if probe_id == seen.probe_id:
            return None
        seen.probe_id = probe_id
        if ok:
            seen.probe_ok_at = max(seen.probe_ok_at, at)
        if probe_id.rpartition("#")[0] == self.token:
            return None  # our own round: the local rules applied it already
        wall_now_at_probe = at
        # The prober's counts before its round, so the same rule leaves both at the same count.
        if ok:
            inst.consecutive_probe_successes = max(int(record.get("passes") or 0) - 1, 0)
        else:
            inst.consecutive_probe_failures = max(int(record.get("failures") or 0) - 1, 0)
        installed = record.get("installed")
        loaded: dict[str, float] = {}
        for model, until in (record.get("loaded") or {}).items():
            if until == "inf":
                loaded[model] = math.inf
            elif float(until) > wall_now_at_probe:
                loaded[model] = float(until) - wall_now_at_probe
        result = ProbeResult(
            inst.id,
            ok,
            float(record.get("latency") or 0.0),
            record.get("version"),
            frozenset(installed) if installed is not None else None,
            loaded,
            record.get("error"),
        )
        moved = record_probe(inst, result, now)
        if inst.state is state:
            return moved
        # Our own requests had moved this process elsewhere: the prober's verdict counts.
        old = inst.state
        inst.state = state
        if state in RESETS_PROBE_FAILURES:
            inst.consecutive_probe_failures = 0
        change = Change("health", old.value, state.value, f"the pool's health check found it {state.value}")
        return Transitions((*moved.changes, change), filters_changed=moved.filters_changed)

    def _apply_latency(
        self, inst: OllamaInstance, views: list[LatencyView], now: float, wall_now: float
    ) -> None:
        own = self._own.get(inst.id)
        if own is not None and own.ttft.estimate is not None:
            views.append(own.view())
        if not views:
            return
        m = inst.metrics
        ttft, tpot = merge_latency(views, wall_now, m.ttft.decay)
        # Both stamped now: the latency scorer then decays both with one exp.
        if ttft is not None:
            m.ttft.estimate, m.ttft.observed_at = ttft, now
        if tpot is not None:
            m.tpot.estimate, m.tpot.observed_at = tpot, now
