# Generated from gleitzeit_llm/_async/calls.py by scripts/unasync.py, do not edit.
# Change that file instead, then run `make unasync`.
"""The send chain of :class:`~gleitzeit_llm.provider.OllamaPoolProvider`: attempts with failover
for each model in turn, a slot per attempt, one call or the opening of a stream, and reading it.

The decisions (which model next, retry or not, how long to back off, what the caller is told) are
:class:`~gleitzeit_llm.provider._Call`'s; this is only the I/O around them. Only the async file is
written by hand: ``scripts/unasync.py`` writes the blocking one from it (``make unasync``), and the
provider inherits both chains.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tenacity import Retrying

from gleitzeit_llm.errors import InstanceError, NoInstanceAvailableError, PoolSaturatedError, RequestError

if TYPE_CHECKING:
    from gleitzeit_llm.manager import Lease, OllamaPoolManager
    from gleitzeit_llm.ollama import OllamaTransport
    from gleitzeit_llm.provider import PoolInfo, _Call

__all__ = ["SendChain"]


class SendChain:
    """The send chain of the provider's async faces (``chat``, ``stream_chat``, ``execute`` ...)."""

    manager: OllamaPoolManager

    if TYPE_CHECKING:  # the provider's own

        def _ensure_started(self) -> None: ...

        def _sync_transport(self, lease: Lease) -> OllamaTransport: ...

    def _run_sync(self, call: _Call) -> Any:
        self._ensure_started()
        return self._retry_sync(call, self._attempt_sync)

    def _retry_sync(self, call: _Call, once: Any) -> Any:
        """Attempts with failover for each model in turn (the requested one, then the fallback)."""
        last: BaseException | None = None
        for index, model in enumerate(call.models()):
            if index:
                if call.time_left() <= 0:
                    break  # the call's budget is spent: the fallback model gets no attempt
                call.switch_to(model, f"{call.requested_model!r} failed: {last}")
            try:
                return self._attempts_sync(call, once)
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

    def _attempts_sync(self, call: _Call, once: Any) -> Any:
        # The first attempt runs bare: setting tenacity up cost more than routing (about 37 us)
        # and almost every call succeeds at once. tenacity takes over from the first failure.
        try:
            return once(call)
        except BaseException as exc:
            wait = call.first_retry(exc)
            if wait is None:
                raise
        time.sleep(wait)
        for attempt in Retrying(**call.retry_policy()):
            with attempt:
                return once(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _acquire_sync(self, call: _Call) -> Lease:
        """A slot for the call's next attempt, waiting at most what is left of its queue time."""
        route = call.route()
        started = time.monotonic()
        try:
            return self.manager.acquire_sync(
                route, timeout=call.queue_left(), attempt=call.attempts + 1, waited_before=call.queue_waited
            )
        finally:
            call.queue_waited += time.monotonic() - started

    def _attempt_sync(self, call: _Call) -> Any:
        lease = self._acquire_sync(call)
        call.begin_attempt()  # counted once an instance was found: a failed route is no attempt
        try:
            transport = self._sync_transport(lease)
            # None (the transport's own) unless the call has a budget: then what is left of it.
            timeouts = None if call.deadline is None else call.attempt_timeouts()
            if call.kind == "embed":
                final = transport.embed(call.request, timeouts=timeouts)
                lease.mark_first_chunk()
            elif call.kind == "raw":  # the gateway's pass-through (gleitzeit_llm.passthrough)
                final = call.collect_sync(transport, timeouts, lease.mark_first_chunk)
            else:
                # Streamed on the wire (per-chunk idle timeouts), folded and validated once:
                # validating every chunk cost about 5 us per token.
                collect = transport.collect_chat if call.kind == "chat" else transport.collect_generate
                final = collect(call.request, timeouts=timeouts, on_first=lease.mark_first_chunk)
            result = call.result(lease, final)
        except BaseException as exc:
            call.attempt_failed(lease, exc)
            raise
        call.attempt_succeeded(lease, final)
        return result

    def _stream_sync(self, call: _Call, holder: list[PoolInfo]) -> Iterator[Any]:
        self._ensure_started()
        lease, stream, first = self._retry_sync(call, self._open_once_sync)
        holder.append(call.info(lease))
        final, error, chunks = first, None, 1
        try:
            yield first
            for chunk in stream:
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
                _close(stream)

    def _open_once_sync(self, call: _Call) -> tuple[Lease, Any, Any]:
        lease = self._acquire_sync(call)
        call.begin_attempt()  # counted once an instance was found: a failed route is no attempt
        stream: Any = None
        try:
            stream = call.open_stream(self._sync_transport(lease))
            first = stream.__next__()
        except BaseException as exc:
            _close(stream)
            if isinstance(exc, StopIteration):
                empty = call.empty_stream(lease)
                call.attempt_failed(lease, empty)
                raise empty from None
            call.attempt_failed(lease, exc)
            raise
        lease.mark_first_chunk()
        return lease, stream, first


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
