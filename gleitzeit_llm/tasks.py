"""Pool calls side by side, for adapters that split one request into parts (embedding batches)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

__all__ = ["gather_or_cancel"]

_T = TypeVar("_T")


async def gather_or_cancel(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """Run ``calls`` at once and return their results in order; when one fails (or the caller is
    cancelled), cancel the others and wait for them before raising, so no part outlives the call
    and keeps a slot."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
