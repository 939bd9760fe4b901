"""Sync calls and event loops: refuse to block a loop thread, or step off it on purpose.

A sync twin (``chat_sync``, ``acquire_sync``, ...) blocks its thread. On a thread that runs an
event loop that stalls every task of the loop, including one that may hold the very slot the
call waits for: it would hang for the whole queue timeout, then blame saturation. The core
therefore refuses (:func:`refuse_on_loop_thread`). Framework adapters whose sync methods users
legitimately call from async code (LangChain's ``invoke`` in an async app) use
:func:`run_blocking` and :func:`sync_stream`, which run the sync call in a worker thread there.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gleitzeit_llm.errors import SyncCallInEventLoopError

__all__ = ["on_loop_thread", "refuse_on_loop_thread", "run_blocking", "sync_stream"]

_T = TypeVar("_T")
_END = object()


def on_loop_thread() -> bool:
    """Whether the calling thread is running an event loop right now."""
    return asyncio._get_running_loop() is not None


def refuse_on_loop_thread(called: str, use: str) -> None:
    """Raise :class:`SyncCallInEventLoopError` at once on a thread that runs an event loop."""
    if on_loop_thread():
        raise SyncCallInEventLoopError(
            f"{called} blocks, and this thread runs an event loop: use {use} instead "
            "(or run the sync call in a worker thread, e.g. asyncio.to_thread)"
        )


def run_blocking(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` here, or in a worker thread (same context) on a loop thread.

    The loop thread still waits for the answer, as it did before; the call itself no longer
    runs on it, so it is not refused.
    """
    if not on_loop_thread():
        return fn(*args, **kwargs)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="gleitzeit-sync") as worker:
        return worker.submit(context.run, fn, *args, **kwargs).result()


def sync_stream(open_stream: Callable[[], Any]) -> Any:
    """``open_stream()`` here, or on a loop thread a stream whose every step runs in a worker.

    The result has what a :class:`~gleitzeit_llm.provider.SyncPoolStream` has: iteration,
    ``pool`` and ``close()``.
    """
    if not on_loop_thread():
        return open_stream()
    return _OffLoopStream(open_stream)


class _OffLoopStream:
    """A sync pool stream driven from a worker thread (one per stream)."""

    def __init__(self, open_stream: Callable[[], Any]) -> None:
        self._context = contextvars.copy_context()
        self._worker: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="gleitzeit-sync")
        try:
            self._stream = self._run(open_stream)
        except BaseException:
            self._shutdown()
            raise

    def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._worker is not None, "the stream is closed"
        return self._worker.submit(self._context.run, fn, *args).result()

    @property
    def pool(self) -> Any:
        return self._stream.pool

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._worker is None:
            raise StopIteration
        chunk = self._run(next, self._stream, _END)  # StopIteration cannot cross a future
        if chunk is _END:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        if self._worker is None:
            return
        try:
            self._run(self._stream.close)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False)

    def __enter__(self) -> _OffLoopStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
