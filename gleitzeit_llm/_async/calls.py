"""The send chain of :class:`~gleitzeit_llm.provider.OllamaPoolProvider`: attempts with failover
for each model in turn, a slot per attempt, one call or the opening of a stream, and reading it.

The decisions (which model next, retry or not, how long to back off, what the caller is told) are
:class:`~gleitzeit_llm.provider._Call`'s; this is only the I/O around them. Only the async file is
written by hand: ``scripts/unasync.py`` writes the blocking one from it (``make unasync``), and the
provider inherits both chains.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tenacity import AsyncRetrying

from gleitzeit_llm.errors import InstanceError, NoInstanceAvailableError, PoolSaturatedError, RequestError

if TYPE_CHECKING:
    from gleitzeit_llm.manager import Lease, OllamaPoolManager
    from gleitzeit_llm.ollama import AsyncOllamaTransport
    from gleitzeit_llm.provider import PoolInfo, _Call

__all__ = ["AsyncSendChain"]


class AsyncSendChain:
    """The send chain of the provider's async faces (``chat``, ``stream_chat``, ``execute`` ...)."""

    manager: OllamaPoolManager

    if TYPE_CHECKING:  # the provider's own

        def _ensure_started(self) -> None: ...

        async def _async_transport(self, lease: Lease) -> AsyncOllamaTransport: ...

    async def _run_async(self, call: _Call) -> Any:
        self._ensure_started()
        return await self._retry_async(call, self._attempt_async)

    async def _retry_async(self, call: _Call, once: Any) -> Any:
        """Attempts with failover for each model in turn (the requested one, then the fallback)."""
        last: BaseException | None = None
        for index, model in enumerate(call.models()):
            if index:
                if call.time_left() <= 0:
                    break  # the call's budget is spent: the fallback model gets no attempt
                call.switch_to(model, f"{call.requested_model!r} failed: {last}")
            try:
                return await self._attempts_async(call, once)
            except RequestError:
                raise
            except PoolSaturatedError as exc:
                # Ran out of the call's queue time: counts as a failed attempt; the fallback
                # model still gets its try (at once, with whatever queue time is left).
                call.errors.append(exc)
                last = exc
            except (InstanceError, NoInstanceAvailableError) as exc:
                call.note_unroutable(exc)
                last = exc
        assert last is not None
        raise call.final_error(last)

    async def _attempts_async(self, call: _Call, once: Any) -> Any:
        # The first attempt runs bare: setting tenacity up cost more than routing (about 37 us)
        # and almost every call succeeds at once. tenacity takes over from the first failure.
        try:
            return await once(call)
        except BaseException as exc:
            wait = call.first_retry(exc)
            if wait is None:
                raise
        await asyncio.sleep(wait)
        async for attempt in AsyncRetrying(**call.retry_policy()):
            with attempt:
                return await once(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _acquire_async(self, call: _Call) -> Lease:
        """A slot for the call's next attempt, waiting at most what is left of its queue time."""
        route = call.route()
        started = time.monotonic()
        try:
            return await self.manager.acquire(
                route, timeout=call.queue_left(), attempt=call.attempts + 1, waited_before=call.queue_waited
            )
        finally:
            call.queue_waited += time.monotonic() - started

    async def _attempt_async(self, call: _Call) -> Any:
        lease = await self._acquire_async(call)
        call.begin_attempt()  # counted once an instance was found: a failed route is no attempt
        try:
            transport = await self._async_transport(lease)
            # None (the transport's own) unless the call has a budget: then what is left of it.
            timeouts = None if call.deadline is None else call.attempt_timeouts()
            if call.kind == "embed":
                final = await transport.embed(call.request, timeouts=timeouts)
                lease.mark_first_chunk()
            elif call.kind == "raw":  # the gateway's pass-through (gleitzeit_llm.passthrough)
                final = await call.collect_async(transport, timeouts, lease.mark_first_chunk)
            else:
                # Streamed on the wire (per-chunk idle timeouts), folded and validated once:
                # validating every chunk cost about 5 us per token.
                collect = transport.collect_chat if call.kind == "chat" else transport.collect_generate
                final = await collect(call.request, timeouts=timeouts, on_first=lease.mark_first_chunk)
            result = call.result(lease, final)
        except BaseException as exc:
            call.attempt_failed(lease, exc)
            raise
        call.attempt_succeeded(lease, final)
        return result

    async def _stream_async(self, call: _Call, holder: list[PoolInfo]) -> AsyncIterator[Any]:
        self._ensure_started()
        lease, stream, first = await self._retry_async(call, self._open_once_async)
        holder.append(call.info(lease))
        final, error, chunks = first, None, 1
        try:
            yield first
            async for chunk in stream:
                final = chunk
                chunks += 1
                yield chunk
        except BaseException as exc:
            error = call.delivered(exc, chunks)
            if error is not exc:
                raise error from exc
            raise
        finally:
            # The slot first: on an event loop, a stream left by a cancelled consumer is closed
            # by the loop's async-generator finalizer, and the slot must be free by that task's
            # first step, not after closing the connection takes a few more loop turns.
            try:
                call.stream_ended(lease, error, final, holder)
            finally:
                await _aclose(stream)

    async def _open_once_async(self, call: _Call) -> tuple[Lease, Any, Any]:
        lease = await self._acquire_async(call)
        call.begin_attempt()  # counted once an instance was found: a failed route is no attempt
        stream: Any = None
        try:
            stream = call.open_stream(await self._async_transport(lease))
            first = await stream.__anext__()
        except BaseException as exc:
            await _aclose(stream)
            if isinstance(exc, StopAsyncIteration):
                empty = call.empty_stream(lease)
                call.attempt_failed(lease, empty)
                raise empty from None
            call.attempt_failed(lease, exc)
            raise
        lease.mark_first_chunk()
        return lease, stream, first


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
