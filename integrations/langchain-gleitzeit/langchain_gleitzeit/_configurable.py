"""``configurable_fields`` of a model that holds a pool: the rebuilt model keeps the pool.

LangChain's ``RunnableConfigurableFields`` builds a new model object from the default's fields
for every call that configures one. Built naively, each would open a pool of its own, so health,
breakers and in-flight counts would never be shared. :class:`PoolConfigurableFields` names the
model being rebuilt (a context variable, so concurrent threads and tasks don't mix), and
:func:`~langchain_gleitzeit._pool.open_pool` hands the rebuilt model that model's pool when its
pool arguments are the same.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.configurable import RunnableConfigurableFields

__all__ = ["PoolConfigurableFields", "rebuilt_from"]

_ORIGIN: ContextVar[Any] = ContextVar("langchain_gleitzeit_rebuilt_from", default=None)


def rebuilt_from() -> Any:
    """The model whose configured copy is being constructed right now, or ``None``."""
    return _ORIGIN.get()


class PoolConfigurableFields(RunnableConfigurableFields):
    """``RunnableConfigurableFields`` whose rebuilt model shares the default's pool, unless a
    configured field changes the pool itself (then the rebuilt model builds its own)."""

    @classmethod
    def lc_id(cls) -> list[str]:
        """Serialized as LangChain's own class (the difference is only at run time)."""
        return RunnableConfigurableFields.lc_id()

    def _prepare(self, config: RunnableConfig | None = None) -> tuple[Any, RunnableConfig]:
        token = _ORIGIN.set(self.default)
        try:
            return super()._prepare(config)
        finally:
            _ORIGIN.reset(token)
