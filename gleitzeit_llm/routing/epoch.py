"""A counter that moves whenever an instance may have become routable or unroutable.

Instances (``state``, ``busy_until``) and breakers (every transition) bump it; the router caches
which instances pass its filters until it moves. It is process-wide: a change in one pool makes
the others recompute once, which costs a scan and never routes on stale state.
"""

from __future__ import annotations

import itertools

_ticks = itertools.count(1)
_current = 0


def bump() -> None:
    """Something that decides routability changed."""
    global _current
    _current = next(_ticks)  # next() is atomic under the GIL: concurrent bumps never collide


def current() -> int:
    return _current
