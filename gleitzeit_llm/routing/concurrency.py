"""Learned concurrency: how many requests of one model an Ollama server really runs at once.

Ollama runs ``OLLAMA_NUM_PARALLEL`` requests per loaded model (1 by default since 0.9.7) and
queues the rest inside the server without bound, where routing can no longer move them. The
server says how long each request waited there: the final chunk's ``total_duration -
load_duration - prompt_eval_duration - eval_duration`` (routing-science.md §0.2). A
:class:`ConcurrencyLimit` per (instance, model) turns that into a limit between 1 and the
instance's ``max_concurrent``, so that the queue stays on our side, where the next free slot
anywhere in the pool can take the request.

The rule is AIMD as in Netflix's concurrency-limits (``AIMDLimit``), with the decrease sized by
the queue itself, as its gradient limits size theirs by latency (``limit x no-load RTT / RTT``);
here the no-load time is known per request (the server's own prompt and generation time), so
no minimum has to be estimated:

* a request that did not queue, sent while the limit was in use, counts toward one window of
  ``limit`` such requests; a full window raises the limit by 1;
* a request that queued lowers it to ``in flight x service / (service + queue)``, where ``in
  flight`` counts the requests in flight when it was sent, itself included: the server ran
  ``p`` of those ``n`` at once, so the last one waited ``(n - p) / p`` service times. The new
  limit is below ``n`` (that many queued) and at least 1, and not below a limit that served a
  whole window without queueing (one sample is noisy) unless it queued at that limit too;
* after a change, the requests still in flight were sent under the old limit: their answers
  are not counted (one decrease per round trip, as TCP does it), so one burst of queued
  answers cannot drive the limit down step by step to 1;
* the number in flight that queued is remembered as the ceiling: reaching it again waits
  ``probe_windows`` windows (16, doubling after each probe that queued again, up to 256), so a
  learned limit costs a queued request rarely; a probe that does not queue forgets the ceiling.

The limit starts at ``max_concurrent``: until a server is seen queueing, routing is exactly as
without learning.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["QUEUE_FLOOR", "QUEUE_SHARE", "ConcurrencyLimit", "ModelLimits", "server_times"]

# Queue time below max(QUEUE_FLOOR, QUEUE_SHARE x service time) is not queueing: Ollama's own
# bookkeeping between its timers (template, tokenizing, HTTP) leaves 0.4-6 ms in its examples.
QUEUE_FLOOR = 0.010
QUEUE_SHARE = 0.05
FIRST_PROBE_WINDOWS = 16
MAX_PROBE_WINDOWS = 256


def server_times(final: Any) -> tuple[float, float] | None:
    """Seconds a generation waited inside the server and seconds the server worked on it, from
    its final chunk (None when it reports no ``total_duration``).

    Queue: ``total_duration - load_duration - prompt_eval_duration - eval_duration``; work:
    ``prompt_eval_duration + eval_duration`` (Ollama omits either when zero, e.g. a fully
    cached prompt). Both come from the server's clock, so they compare with each other.
    """
    total = getattr(final, "total_duration", None)
    if not total:
        return None
    work = (getattr(final, "prompt_eval_duration", None) or 0) + (getattr(final, "eval_duration", None) or 0)
    queue = total - (getattr(final, "load_duration", None) or 0) - work
    return max(queue, 0) / 1e9, work / 1e9


class ConcurrencyLimit:
    """The learned limit of one (instance, model): an int between 1 and ``maximum``.

    >>> lim = ConcurrencyLimit(8)
    >>> lim.observe(queue=0.3, service=0.1, in_flight=8, sent_at=0.0, now=0.4)  # 8 x 1/4
    False
    >>> lim.limit, lim.ceiling
    (2, 8)
    """

    __slots__ = (
        "_changed_at",
        "_clean",
        "_probe_windows",
        "ceiling",
        "decreases",
        "good",
        "increases",
        "limit",
        "maximum",
    )

    def __init__(self, maximum: int, initial: int | None = None) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum if initial is None else min(max(1, initial), self.maximum)
        # The fewest in flight seen queueing, not disproved since (None: none known).
        self.ceiling: int | None = None
        # The highest limit that served a whole window in use without queueing (None: none yet).
        self.good: int | None = None
        self.increases = 0
        self.decreases = 0
        self._clean = 0  # answers in the current window that did not queue
        self._changed_at = -math.inf  # requests sent before this were sent under another limit
        self._probe_windows = FIRST_PROBE_WINDOWS

    def observe(self, queue: float, service: float, in_flight: int, sent_at: float, now: float) -> bool:
        """Learn from one answered request; returns whether the limit went up.

        ``queue``: seconds it waited inside the server; ``service``: seconds the server worked
        on it; ``in_flight``: requests of this model in flight here when it was sent, itself
        included; ``sent_at`` and ``now``: when it was sent and answered (one clock).
        """
        if sent_at < self._changed_at:
            return False  # sent under the previous limit: it says nothing about this one
        limit = self.limit
        if queue > max(QUEUE_FLOOR, QUEUE_SHARE * service):
            self._decrease(limit, min(limit, max(in_flight, 1)), queue, service, now)
            return False
        if in_flight < limit:
            return False  # the limit was not in use: this says nothing about a higher one
        self._clean += 1
        if self._clean >= limit and (self.good is None or limit > self.good):
            self.good = limit
        ceiling = self.ceiling
        if ceiling is not None and limit >= ceiling and self._clean >= limit:
            # A whole window at the remembered ceiling without queueing: it no longer holds.
            self.ceiling = ceiling = None
            self._probe_windows = FIRST_PROBE_WINDOWS
        probing = ceiling is not None and limit + 1 >= ceiling
        if self._clean < (limit * self._probe_windows if probing else limit) or limit >= self.maximum:
            return False
        self.limit = limit + 1
        self.increases += 1
        self._clean = 0
        self._changed_at = now
        return True

    def _decrease(self, limit: int, used: int, queue: float, service: float, now: float) -> None:
        """It queued with ``used`` in flight: the server runs fewer than that."""
        if self.ceiling is not None and limit >= self.ceiling:
            # A probe at the ceiling queued again: probe less often.
            self._probe_windows = min(self._probe_windows * 2, MAX_PROBE_WINDOWS)
        good = self.good
        if good is not None and good >= used:
            good = self.good = None  # it queues where it did not: the server runs fewer now
        # The server ran p of the `used` at once; the last one sent waited (used - p) / p
        # service times. One sample is noisy (it may not have been last in line), so a limit
        # that served a whole window without queueing is not given up for it.
        share = service / (service + queue) if service > 0 else 0.0
        estimate = max(round(used * share), good or 0)
        self.limit = max(1, min(used - 1, estimate))
        self.ceiling = max(used, self.limit + 1)
        self.decreases += 1
        self._clean = 0
        self._changed_at = now

    def snapshot(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "max": self.maximum,
            "ceiling": self.ceiling,
            "good": self.good,
            "increases": self.increases,
            "decreases": self.decreases,
        }

    def __repr__(self) -> str:
        return f"ConcurrencyLimit(limit={self.limit}, max={self.maximum}, ceiling={self.ceiling})"


class ModelLimits(dict[str, ConcurrencyLimit]):
    """The learned limits of one instance, by model_key; a model gets one at its first answer."""

    __slots__ = ("maximum",)

    def __init__(self, maximum: int) -> None:
        super().__init__()
        self.maximum = maximum

    def admits(self, model: str | None, in_flight_by_model: dict[str, int]) -> bool:
        """Whether one more request of ``model`` stays within its learned limit."""
        if model is None:
            return True
        learned = self.get(model)
        return learned is None or in_flight_by_model.get(model, 0) < learned.limit

    def observe(
        self, model: str, queue: float, service: float, in_flight: int, sent_at: float, now: float
    ) -> bool:
        learned = self.get(model)
        if learned is None:
            learned = self[model] = ConcurrencyLimit(self.maximum)
        return learned.observe(queue, service, in_flight, sent_at, now)

    def snapshot(self) -> dict[str, int]:
        return {model: learned.limit for model, learned in sorted(self.items())}
