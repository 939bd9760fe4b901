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
    """

    __slots__ = ("_stamp", "_value", "decay", "min_weight")

    def __init__(self, decay: float = 10.0, min_weight: float = 0.1) -> None:
        self.decay = decay
        self.min_weight = min_weight
        self._value: float | None = None
        self._stamp = 0.0

    def observe(self, sample: float, now: float) -> None:
        if self._value is None or sample > self._value:
            self._value = sample
        else:
            w = min(math.exp(-max(now - self._stamp, 0.0) / self.decay), 1.0 - self.min_weight)
            self._value = self._value * w + sample * (1.0 - w)
        self._stamp = now

    def value_at(self, now: float) -> float | None:
        """The estimate at ``now``, decayed toward zero for the time since the last sample."""
        if self._value is None:
            return None
        idle = now - self._stamp
        if idle <= 0.0:
            return self._value
        return self._value * math.exp(-idle / self.decay)

    @property
    def has_data(self) -> bool:
        return self._value is not None

    def __repr__(self) -> str:
        return f"PeakEwma({self._value!r})"
