"""A counter that moves whenever an instance may have become routable or unroutable.

Instances (``state``, ``busy_until``) and breakers (every transition) bump their pool's epoch;
the router caches which instances pass its filters until it moves. Each pool has its own
(:class:`~gleitzeit_llm.state.local.LocalState` creates it), so a change in one pool never makes
another recompute. Instances and routers built outside a pool (tests, the routing benchmark)
share :data:`UNPOOLED`.
"""

from __future__ import annotations

import itertools

__all__ = ["UNPOOLED", "Epoch"]


class Epoch:
    """One pool's routing epoch: read ``value``, move it with :meth:`bump`."""

    __slots__ = ("_ticks", "value")

    def __init__(self) -> None:
        self._ticks = itertools.count(1)
        self.value = 0

    def bump(self) -> None:
        """Something that decides routability changed."""
        self.value = next(self._ticks)  # next() is atomic under the GIL: concurrent bumps never collide

    def __repr__(self) -> str:
        return f"Epoch({self.value})"


UNPOOLED = Epoch()
