"""The state seam: what the pool knows about its instances, behind one interface.

:class:`StateStore` is the interface (each method documented with the round trips a remote
store needs); :class:`LocalState` is the in-process store; ``gleitzeit_llm.state.redis`` holds
the store shared through Redis (``shared_state``, docs/scale-out.md), imported only when used.
"""

from gleitzeit_llm.state.base import Grant, StateStore
from gleitzeit_llm.state.local import LocalState

__all__ = ["Grant", "LocalState", "StateStore"]
