"""Decaying latency statistics (peak-EWMA, as in Finagle, Linkerd and tower's ``PeakEwma``)."""

from __future__ import annotations

import math

__all__ = ["PeakEwma"]


class PeakEwma:
    """A latency estimate that jumps up at once and decays down over ``decay`` seconds.

    Jumping on peaks makes a slowing instance lose traffic immediately; decaying toward zero
    while no samples arrive makes an idle (or shunned) instance look cheap again after a while,
    so it is re-probed instead of starved. ``value_at(now)`` is ``None`` until the first sample.

    Each sample below the estimate also pulls it down by at least ``min_weight``: with purely
    time-based decay, a one-off peak (a connection set-up, a pause) would dominate for ``decay``
    seconds however many fast samples follow it.

    Reading: :meth:`value_at` (the decayed estimate), or the raw pair ``estimate`` (as of the
    last sample, ``None`` before any) and ``observed_at`` (that sample's clock time), which a
    scorer over many instances reads to decay two estimates with one ``exp``. Only
    :meth:`observe` writes them.
    """

    __slots__ = ("decay", "estimate", "min_weight", "observed_at")

    def __init__(self, decay: float = 10.0, min_weight: float = 0.1) -> None:
        self.decay = decay
        self.min_weight = min_weight
        self.estimate: float | None = None
        self.observed_at = 0.0

    def observe(self, sample: float, now: float) -> None:
        if self.estimate is None or sample > self.estimate:
            self.estimate = sample
        else:
            w = min(math.exp(-max(now - self.observed_at, 0.0) / self.decay), 1.0 - self.min_weight)
            self.estimate = self.estimate * w + sample * (1.0 - w)
        self.observed_at = now

    def value_at(self, now: float) -> float | None:
        """The estimate at ``now``, decayed toward zero for the time since the last sample."""
        if self.estimate is None:
            return None
        idle = now - self.observed_at
        if idle <= 0.0:
            return self.estimate
        return self.estimate * math.exp(-idle / self.decay)

    @property
    def has_data(self) -> bool:
        return self.estimate is not None

    def __repr__(self) -> str:
        return f"PeakEwma({self.estimate!r})"
