"""OllamaPoolProvider: run chat, generate and embed through the pool.

Per call: validate the request before any instance is picked, reserve a slot (waiting for one,
bounded, when every eligible instance is full), send, and on an instance's failure retry on an
instance not yet tried (tenacity, full-jitter backoff), then fall back to ``fallback_model`` once
the requested model failed or is missing everywhere it could run. Caller mistakes (HTTP 400,
invalid params) are raised at once and never count against an instance.

Chat and generate are streamed on the wire even when the caller wants one answer: the pool then
measures time to first token for ``latency_based``, bounds every gap between chunks instead of
the whole generation, and can fail a broken non-streamed call over to another instance. A
streamed call fails over only before its first chunk; after that the caller has seen output and
the error is raised.

The async methods and their sync twins (``chat`` / ``chat_sync`` ...) share one pool state; the
retry and fallback decisions live in :class:`_Call`, only the I/O differs. That I/O, the send
chain, is written once in :mod:`gleitzeit_llm._async.calls`; its sync twin is generated from it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import re
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import Field
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential
from tenacity.stop import stop_base

from gleitzeit_llm._async.calls import AsyncSendChain
from gleitzeit_llm._sync.calls import SendChain
from gleitzeit_llm.blocking import refuse_on_loop_thread
from gleitzeit_llm.config import InstanceConfig, PoolConfig
from gleitzeit_llm.connections import Connections
from gleitzeit_llm.errors import (
    AllInstancesFailedError,
    GleitzeitError,
    InstanceError,
    InstanceTimeoutError,
    NoInstanceAvailableError,
    PoolSaturatedError,
    RequestError,
    StreamInterruptedError,
)
from gleitzeit_llm.hints import HINT_NAMES, RoutingHints
from gleitzeit_llm.lifecycle import Lifecycle
from gleitzeit_llm.manager import Lease, OllamaPoolManager
from gleitzeit_llm.model_info import ModelInfo
from gleitzeit_llm.observability.events import EventBus, FailoverEvent, FallbackEvent
from gleitzeit_llm.ollama import AsyncOllamaTransport, OllamaTransport, Timeouts, model_key
from gleitzeit_llm.ollama.models import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    ShowResponse,
)
from gleitzeit_llm.routing.concurrency import server_times
from gleitzeit_llm.routing.health import ProbeTarget
from gleitzeit_llm.routing.prefix import prompt_prefix

__all__ = [
    "HINT_NAMES",
    "OllamaPoolProvider",
    "PoolChatResponse",
    "PoolEmbedResponse",
    "PoolGenerateResponse",
    "PoolInfo",
    "PoolStream",
    "RoutingHints",
    "SyncPoolStream",
]

METHODS = ("llm/chat", "llm/generate", "llm/embed")
# A load_duration above this (seconds) means the model was loaded for this request.
COLD_LOAD_THRESHOLD = 0.5
# The shortest budget an attempt is given: a timeout of 0 would make a socket non-blocking.
_MIN_BUDGET = 0.001

_R = TypeVar("_R")


@dataclass(frozen=True)
class PoolInfo:
    """Which instance served a call, after how many attempts, and with which model."""

    instance_id: str
    url: str
    attempts: int
    fallback_used: bool
    model: str
    requested_model: str
    errors: tuple[str, ...] = ()
    ttft: float | None = None
    duration: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "instance_url": self.url,
            "attempts": self.attempts,
            "fallback_used": self.fallback_used,
            "model": self.model,
            "requested_model": self.requested_model,
            "errors": list(self.errors),
            "ttft": self.ttft,
            "duration": self.duration,
        }


class PoolChatResponse(ChatResponse):
    """A chat answer plus ``pool``: where and how it was served."""

    pool: PoolInfo | None = Field(default=None, exclude=True)


class PoolGenerateResponse(GenerateResponse):
    """A generate answer plus ``pool``."""

    pool: PoolInfo | None = Field(default=None, exclude=True)


class PoolEmbedResponse(EmbedResponse):
    """Embeddings plus ``pool``."""

    pool: PoolInfo | None = Field(default=None, exclude=True)


def _with_pool(response: Any, cls: type[_R], info: PoolInfo) -> _R:
    data = dict(response.__dict__)
    if response.__pydantic_extra__:
        data.update(response.__pydantic_extra__)
    return cls.model_construct(_fields_set=response.model_fields_set, **data, pool=info)  # type: ignore[attr-defined, no-any-return]


_DURATION_PART = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))(ns|us|µs|μs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: Any) -> float | None:
    """Seconds a model stays loaded after this request (negative: forever), or None for the default."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        sign = -1.0 if text.startswith("-") else 1.0
        parts = _DURATION_PART.findall(text.lstrip("+-"))
        if parts:
            return sign * sum(float(n) * _UNIT[u] for n, u in parts)
    return None


@dataclass
class _Call:
    """One call's journey through the pool: the shared retry/fallback logic of both I/O faces."""

    provider: OllamaPoolProvider
    kind: str  # "chat" | "generate" | "embed"
    request: Any
    hints: RoutingHints
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0
    model_attempts: int = 0  # attempts with the current model (the retry budget is per model)
    errors: list[BaseException] = field(default_factory=list)
    # Per model that no instance could take at all: (model, why), to name every one at the end.
    unroutable: list[tuple[str, NoInstanceAvailableError]] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    fallback_used: bool = False
    model: str = ""
    first_route: Any = None  # the RouteRequest validated by _call(), used by the first attempt
    prefix: Any = None  # the prompt's PromptPrefix, hashed once when its strategy needs it
    queue_waited: float = 0.0  # seconds this call spent waiting for slots, over all its attempts
    # timeouts.total as a budget for the whole call (attempts, slot waits, backoff), or None.
    deadline: float | None = None

    def __post_init__(self) -> None:
        self.requested_model = self.request.model
        self.model = self.request.model
        total = self.provider._timeouts.total
        if total is not None:
            self.deadline = self.started + total

    def time_left(self) -> float:
        """Seconds left of the call's budget (``timeouts.total``); infinite without one."""
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def attempt_timeouts(self) -> Timeouts | None:
        """The next attempt's timeouts: None (the transport's own) unless the call has a budget,
        then its total is what is left of it, so no wait of the attempt goes past the deadline."""
        if self.deadline is None:
            return None
        left = max(self.deadline - time.monotonic(), _MIN_BUDGET)
        return dataclasses.replace(self.provider._timeouts, total=left)

    def models(self) -> list[str]:
        fallback = self.hints.fallback_model
        if fallback and fallback.strip() and fallback != self.requested_model:
            return [self.requested_model, fallback]
        return [self.requested_model]

    def switch_to(self, model: str, reason: str) -> None:
        if model != self.model:
            self.fallback_used = True
            self.provider.events.emit(
                FallbackEvent(model_key(self.requested_model), model_key(model), reason)
            )
            self.request = self.request.model_copy(update={"model": model})
            self.model = model
            self.tried = set()
            self.model_attempts = 0

    def route(self) -> Any:
        if self.first_route is not None:  # validated a moment ago: not twice
            first, self.first_route = self.first_route, None
            return first
        manager = self.provider.manager
        route = manager.route_request(
            self.model,
            self.hints.load_balancing_strategy,
            self.hints.instance_tags,
            require_gpu=bool(self.hints.require_gpu),
            max_latency=self.hints.max_latency,
            exclude=tuple(self.tried),
            session_id=self.hints.session_id,
        )
        # Only cache_aware or a prefix_weight hash the prompt: other calls pay two attribute reads.
        if (route.strategy == "cache_aware" or manager.prefix_term) and manager.wants_prefix(route.strategy):
            if self.prefix is None:  # once per call, outside the pool's lock (None for embed)
                self.prefix = prompt_prefix(self.kind, self.request)
            route = dataclasses.replace(route, prefix=self.prefix)
        return route

    def queue_left(self) -> float:
        """What is left of the call's one queue timeout: every acquire in the call shares it
        (and never waits past the call's budget)."""
        left = max(self.provider.config.load_balancing.queue_timeout - self.queue_waited, 0.0)
        return left if self.deadline is None else max(min(left, self.time_left()), 0.0)

    def max_attempts(self) -> int:
        lb = self.provider.config.load_balancing
        if not lb.failover or (not lb.retry_same_instance and len(self.provider.manager.instances) < 2):
            return 1  # one server: a retry could only go back to the server that just failed
        return 1 + lb.retry_attempts

    def retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, InstanceError) and not (
            isinstance(exc, StreamInterruptedError) and getattr(exc, "delivered", False)
        )

    def begin_attempt(self) -> None:
        self.attempts += 1
        self.model_attempts += 1

    def will_retry(self, exc: BaseException) -> bool:
        """Whether another attempt follows this failure (then it is a failover)."""
        if not isinstance(exc, InstanceError) or not self.retryable(exc):
            return False
        return self.model_attempts < self.max_attempts() or (
            not self.fallback_used and len(self.models()) > 1
        )

    def attempt_failed(self, lease: Lease, exc: BaseException) -> None:
        """Release the attempt's slot, counting ``exc`` against its instance as it deserves."""
        self.provider.manager.finish(lease, exc)
        self.errors.append(exc)
        self.tried.add(lease.instance_id)
        if self.will_retry(exc):
            self.provider.events.emit(
                FailoverEvent(
                    lease.instance_id, model_key(self.model), f"{type(exc).__name__}: {exc}", self.attempts
                )
            )

    def attempt_succeeded(self, lease: Lease, final: Any) -> None:
        self.provider.manager.finish(lease, None, **self.finish_kwargs(final))

    def stream_ended(
        self, lease: Lease, error: BaseException | None, final: Any, holder: list[PoolInfo]
    ) -> None:
        """A stream the caller consumed ended: done, broken, or left early (counted as cancelled)."""
        if holder:  # the stream's PoolInfo was made at its first chunk: now its duration is known
            holder[0] = dataclasses.replace(holder[0], duration=time.monotonic() - self.started)
        if error is None and not getattr(final, "done", True):
            error = asyncio.CancelledError()
        learned: dict[str, Any] = {}
        if error is None:
            learned = self.finish_kwargs(final)
            # The wall time of a stream is the caller's reading pace: the server's is the first
            # chunk plus its own eval_duration, when it reports one.
            learned["caller_paced"] = True
            if learned.get("eval_duration") and lease.first_chunk_at is not None:
                learned["response_time"] = lease.first_chunk_at - lease.started + learned["eval_duration"]
        self.provider.manager.finish(lease, error, **learned)

    def open_stream(self, transport: Any) -> Any:
        opener = transport.stream_chat if self.kind == "chat" else transport.stream_generate
        return opener(self.request, timeouts=self.attempt_timeouts())

    def result(self, lease: Lease, answer: Any) -> Any:
        """The typed result of a one-shot call, with ``pool`` filled in."""
        cls = {"chat": PoolChatResponse, "generate": PoolGenerateResponse}.get(self.kind, PoolEmbedResponse)
        return _with_pool(answer, cls, self.info(lease))

    def empty_stream(self, lease: Lease) -> StreamInterruptedError:
        return StreamInterruptedError(
            "stream ended before its first chunk", instance=lease.instance_id, url=lease.instance.url
        )

    def info(self, lease: Lease) -> PoolInfo:
        ttft = lease.first_chunk_at - lease.started if lease.first_chunk_at is not None else None
        return PoolInfo(
            instance_id=lease.instance_id,
            url=lease.instance.url,
            attempts=self.attempts,
            fallback_used=self.fallback_used,
            model=self.model,
            requested_model=self.requested_model,
            errors=tuple(f"{type(e).__name__}: {e}" for e in self.errors),
            ttft=ttft,
            duration=time.monotonic() - self.started,
        )

    def note_unroutable(self, exc: BaseException) -> None:
        if isinstance(exc, NoInstanceAvailableError):
            self.unroutable.append((self.model, exc))

    def final_error(self, last: BaseException) -> BaseException:
        if isinstance(last, RequestError):
            return last
        if not self.errors:
            if len(self.unroutable) < 2:
                return last
            # The model and its fallback_model both found no instance: name both.
            (model, why), *rest = self.unroutable
            parts = [f"model {model!r}: {why}"] + [f"fallback_model {m!r}: {e}" for m, e in rest]
            error = NoInstanceAvailableError("; ".join(parts))
            error.__cause__ = last
            return error
        if len(self.errors) == 1 and self.max_attempts() == 1 and not self.hints.fallback_model:
            return last
        if self.errors == [last] and isinstance(last, PoolSaturatedError):
            return last  # the call only waited: nothing else to report
        models = (
            " and ".join(repr(m) for m in self.models()) if self.fallback_used else repr(self.requested_model)
        )
        shown = self.errors[-5:]
        summary = "; ".join(f"{type(e).__name__}: {e}" for e in shown)
        if len(self.errors) > len(shown):
            summary = f"({len(self.errors) - len(shown)} earlier in .errors) {summary}"
        for model, why in self.unroutable:
            summary += f"; model {model!r}: {why}"
        error = AllInstancesFailedError(
            f"all {len(self.errors)} attempt(s) for model {models} failed: {summary}", errors=self.errors
        )
        error.__cause__ = last
        return error

    def finish_kwargs(self, final: Any) -> dict[str, Any]:
        """What the pool learns from a final chunk: tokens, residency, cold loads, queue time."""
        if final is None:
            return {}
        load = getattr(final, "load_duration", None)
        eval_ns = getattr(final, "eval_duration", None)
        prompt_ns = getattr(final, "prompt_eval_duration", None)
        learned = {
            "output_tokens": getattr(final, "eval_count", None),
            "eval_duration": eval_ns / 1e9 if eval_ns else None,
            "prompt_tokens": getattr(final, "prompt_eval_count", None),
            "cached_tokens": getattr(final, "prompt_eval_cached_count", None),
            "prompt_duration": prompt_ns / 1e9 if prompt_ns else None,
            "keep_alive": keep_alive_seconds(getattr(self.request, "keep_alive", None)),
            "cold_load": bool(load and load / 1e9 > COLD_LOAD_THRESHOLD),
        }
        if self.provider._learns_queue and self.kind != "embed":  # embed has no eval durations
            times = server_times(final)
            if times is not None:
                learned["queue_time"], learned["service_time"] = times
        return learned

    def retry_policy(self) -> dict[str, Any]:
        """tenacity arguments for the attempts after a first one failed: the rest of the per-model
        budget, full-jitter backoff, retry only instance errors."""
        lb = self.provider.config.load_balancing
        stop: Any = stop_after_attempt(self.max_attempts() - 1)
        # tenacity counts from the second attempt: its n-th wait is the call's (n+1)-th
        wait: Any = wait_random_exponential(multiplier=2 * lb.retry_backoff_base, max=lb.retry_backoff_max)
        if self.deadline is not None:  # no backoff ends, and no attempt starts, past the budget
            stop = stop | _StopAtDeadline(self)
            wait = _CappedWait(wait, self)
        return {
            "stop": stop,
            "wait": wait,
            "retry": retry_if_exception(self.retryable),
            "reraise": True,
        }

    def first_retry(self, exc: BaseException) -> float | None:
        """Seconds to wait before the second attempt after ``exc``, or None: no retry."""
        if self.max_attempts() < 2 or not self.retryable(exc):
            return None
        lb = self.provider.config.load_balancing
        wait = random.uniform(0, min(lb.retry_backoff_max, lb.retry_backoff_base))
        return None if self.deadline is not None and wait >= self.time_left() else wait

    @staticmethod
    def delivered(exc: BaseException, chunks: int) -> BaseException:
        """The error a streaming caller sees after ``chunks`` chunks: a stream that broke after the
        caller saw output is not retried (nothing is replayed), and is a StreamInterruptedError
        whatever broke it; a stall keeps its timeout as ``phase`` and as the cause."""
        if isinstance(exc, InstanceTimeoutError):
            exc = StreamInterruptedError(
                str(exc),
                chunks_received=chunks,
                phase=exc.phase,
                instance=exc.instance,
                url=exc.url,
                status=exc.status,
                ollama_message=exc.ollama_message,
            )
        if isinstance(exc, StreamInterruptedError):
            exc.delivered = True
        return exc


class _StopAtDeadline(stop_base):
    """tenacity stop: the backoff about to start would end at or past the call's deadline, so
    the attempt after it would have no time (tenacity >= 8.3 computes the wait before it asks)."""

    def __init__(self, call: _Call) -> None:
        self.call = call

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.upcoming_sleep >= self.call.time_left()


class _CappedWait:
    """tenacity wait: the backoff, never past the call's deadline."""

    __slots__ = ("call", "wait")

    def __init__(self, wait: Any, call: _Call) -> None:
        self.wait = wait
        self.call = call

    def __call__(self, retry_state: RetryCallState) -> float:
        return max(min(self.wait(retry_state), self.call.time_left()), 0.0)


class PoolStream(Generic[_R]):
    """An async stream of chunks from one instance; ``pool`` says which, once the first chunk arrived.

    Use it as ``async with provider.stream_chat(...) as stream: async for chunk in stream: ...``.
    Leaving the block (``break``, ``return``, an exception, cancellation) releases the instance's
    slot and closes the connection, which stops the generation on the server, at that moment.
    A stream read to its end releases by itself. A stream left early *without* ``async with`` or
    :meth:`aclose` stays open while it is referenced (Python gives a plain ``break`` no hook);
    when it is garbage-collected the event loop closes it and a ``ResourceWarning`` says so, as
    httpx does for an unclosed client.
    """

    def __init__(self, agen: AsyncIterator[_R], holder: list[PoolInfo]) -> None:
        self._agen = agen
        self._holder = holder
        self._open = False  # started and not yet ended or closed: what an unclosed warning means

    @property
    def pool(self) -> PoolInfo | None:
        return self._holder[0] if self._holder else None

    def __aiter__(self) -> PoolStream[_R]:
        return self

    async def __anext__(self) -> _R:
        self._open = True
        try:
            return await self._agen.__anext__()
        except BaseException:
            self._open = False  # ended, failed or cancelled: the generator has released
            raise

    async def aclose(self) -> None:
        """Release the slot and close the connection now (idempotent)."""
        self._open = False
        await self._agen.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> PoolStream[_R]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._open:
            # The generator's own finaliser (asyncio's asyncgen hooks) schedules its aclose().
            _warn_unclosed(self, "async with provider.stream_chat(...) as stream")


class SyncPoolStream(Generic[_R]):
    """The sync twin of :class:`PoolStream`: ``with provider.stream_chat_sync(...) as stream:``
    releases the slot and closes the connection the moment the block is left."""

    def __init__(self, gen: Iterator[_R], holder: list[PoolInfo]) -> None:
        self._gen = gen
        self._holder = holder
        self._open = False

    @property
    def pool(self) -> PoolInfo | None:
        return self._holder[0] if self._holder else None

    def __iter__(self) -> SyncPoolStream[_R]:
        return self

    def __next__(self) -> _R:
        self._open = True
        try:
            return next(self._gen)
        except BaseException:
            self._open = False
            raise

    def close(self) -> None:
        """Release the slot and close the connection now (idempotent)."""
        self._open = False
        self._gen.close()  # type: ignore[attr-defined]

    def __enter__(self) -> SyncPoolStream[_R]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._open:
            _warn_unclosed(self, "with provider.stream_chat_sync(...) as stream")
            self.close()


def _warn_unclosed(stream: object, form: str) -> None:
    warnings.warn(
        f"unclosed {type(stream).__name__}: a stream left before its end holds a slot and a "
        f"connection until it is closed; use '{form}:' or close it",
        ResourceWarning,  # no source=: a recorded warning would keep the stream alive
        stacklevel=2,
    )


class OllamaPoolProvider(Lifecycle, AsyncSendChain, SendChain):
    """Run chat, generate and embed calls through a pool of Ollama instances.

    The guide's form::

        provider = OllamaPoolProvider(
            provider_id="ollama_pool",
            instances=[{"id": "primary", "url": "http://localhost:11434", "models": ["llama3.2"]},
                       {"id": "secondary", "url": "http://localhost:11435"}],
        )
        await provider.initialize()
        result = await provider.execute(
            method="llm/chat",
            params={"model": "llama3.2", "messages": [{"role": "user", "content": "Hello!"}]},
        )

    Typed calls: :meth:`chat`, :meth:`stream_chat`, :meth:`generate`, :meth:`stream_generate`,
    :meth:`embed`, and their sync twins (``chat_sync``, ...). Routing hints
    (``load_balancing_strategy``, ``instance_tags``, ``require_gpu``, ``fallback_model``,
    ``max_latency`` in ms) are accepted per call and never sent to Ollama.

    ``shared_state={"url": "redis://cache:6379/0"}`` shares leases, breakers and wake-ups with
    every process running the same pool (docs/scale-out.md).
    """

    def __init__(
        self,
        provider_id: str = "ollama_pool",
        instances: Sequence[Mapping[str, Any] | InstanceConfig | str] | None = None,
        load_balancing: Mapping[str, Any] | None = None,
        *,
        config: PoolConfig | Mapping[str, Any] | str | None = None,
        manager: OllamaPoolManager | None = None,
        events: EventBus | None = None,
        health_checks: bool = True,
        shared_state: Mapping[str, Any] | str | None = None,
    ) -> None:
        self.provider_id = provider_id
        if manager is not None:
            if instances is not None or config is not None or shared_state is not None:
                raise GleitzeitError("give either manager=... or instances/config/shared_state, not both")
            self.manager = manager
        else:
            self.manager = OllamaPoolManager(
                instances,
                load_balancing=load_balancing,
                config=config,
                events=events,
                health_checks=health_checks,
                shared_state=shared_state,
            )
        self.config = self.manager.config
        self.events = self.manager.events
        self._timeouts: Timeouts = self.config.timeouts.to_timeouts()
        # Queue times are worked out of each answer only for a pool that learns from them.
        self._learns_queue = self.config.load_balancing.adaptive_concurrency
        self._connections = Connections(self._timeouts)
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Start health checks, build this event loop's transports and probe every instance once
        through them (once per event loop). When it returns, every instance that answered has one
        open connection that the first call reuses; one whose transport cannot be built is marked
        unhealthy without disturbing the others' probes."""
        if self._closed or self._connections.loop_is_warm():
            return
        await self.manager.initialize(self._probe_transport)
        await self._connections.mark_loop_warm()

    def initialize_sync(self) -> None:
        """Sync twin of :meth:`initialize`: warms the transports of sync calls."""
        if self._closed or self._connections.sync_warm:
            return
        self.manager.start(self._probe_transport_sync)
        self._connections.sync_warm = True

    async def close(self) -> None:
        """Close the connections of this event loop and of sync calls, and stop health checks."""
        self._closed = True
        await self._connections.aclose_loop()
        await asyncio.to_thread(self._close_sync_parts)

    def close_sync(self) -> None:
        """Sync twin of :meth:`close` (async transports close with their event loops)."""
        self._closed = True
        self._close_sync_parts()

    def _close_sync_parts(self) -> None:
        self._connections.close_sync()
        self.manager.close_sync()

    def _ensure_started(self) -> None:
        if self._closed:
            raise GleitzeitError("this OllamaPoolProvider is closed")
        if not self.manager._started:
            self.manager._start()

    # -- transports ---------------------------------------------------------------------------

    # Built in gleitzeit_llm.connections; one that cannot be built raises InstanceFailedError,
    # inside the attempt's try: the slot is released and the call fails over.

    async def _async_transport(self, lease: Lease) -> AsyncOllamaTransport:
        return await self._connections.loop_transport(lease.instance)

    def _sync_transport(self, lease: Lease) -> OllamaTransport:
        return self._connections.sync_transport(lease.instance)

    async def _probe_transport(self, target: ProbeTarget) -> AsyncOllamaTransport:
        return await self._connections.loop_transport(self.manager.get(target.instance_id))

    def _probe_transport_sync(self, target: ProbeTarget) -> OllamaTransport:
        return self._connections.sync_transport(self.manager.get(target.instance_id))

    # -- model info ---------------------------------------------------------------------------

    async def show(self, model: str) -> ShowResponse:
        """``/api/show`` for ``model`` through the pool (details, ``context_length``, capabilities).

        Asks an instance that may have the model (routable ones first) and fails over to the next
        when one fails; the answer is kept per model for every later call on this pool, a failure
        is not. Raises :class:`AllInstancesFailedError` when no instance answered,
        :class:`RequestError` for an invalid name or a 400.

        >>> (await pool.show("llama3.2")).context_length
        131072
        """
        return await self._model_info.show(model)

    def show_sync(self, model: str) -> ShowResponse:
        """Sync twin of :meth:`show` (a kept answer is returned on any thread)."""
        return self._model_info.show_sync(model)

    def show_cached(self, model: str) -> ShowResponse | None:
        """The answer :meth:`show` keeps for ``model``, if it has one (no I/O)."""
        return self._model_info.cached(model)

    @property
    def _model_info(self) -> ModelInfo:
        # Built on first use; setdefault keeps one when threads race to build it.
        info = self.__dict__.get("_model_info_cache")
        if info is None:
            built = ModelInfo(self.manager, self._connections, self._timeouts, lambda: self._closed)
            info = self.__dict__.setdefault("_model_info_cache", built)
        return info

    # -- building calls -----------------------------------------------------------------------

    def _call(self, kind: str, request: Any, hints: RoutingHints | None, params: Mapping[str, Any]) -> _Call:
        cls = {"chat": ChatRequest, "generate": GenerateRequest, "embed": EmbedRequest}[kind]
        if isinstance(request, cls) and not params:
            validated, call_hints = request, RoutingHints()
        else:
            if request is None:
                body: dict[str, Any] = {}
            elif hasattr(request, "model_dump"):
                body = request.model_dump(exclude_none=True)
            elif isinstance(request, Mapping):
                body = dict(request)
            else:
                raise RequestError(f"request must be a mapping or a {cls.__name__}", field="request")
            body.update(params)  # a copy: the caller's objects are never changed
            body.pop("stream", None)  # the provider decides how it reads the answer
            call_hints = RoutingHints.pop_from(body)
            validated = cls.coerce(body)
        if hints is not None:
            call_hints = hints.merged(call_hints)
        call = _Call(self, kind, validated, call_hints)
        call.first_route = call.route()  # hints are validated before any instance is picked
        return call

    # -- async faces --------------------------------------------------------------------------

    async def chat(
        self,
        model: str | None = None,
        messages: Sequence[Any] | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> PoolChatResponse:
        """One chat answer. ``params`` are ChatRequest fields (tools, format, options, keep_alive,
        think, ...) and routing hints."""
        call = self._call("chat", request, hints, _merge(model, messages, params))
        return await self._run_async(call)  # type: ignore[no-any-return]

    async def generate(
        self,
        model: str | None = None,
        prompt: str | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> PoolGenerateResponse:
        """One completion from ``/api/generate``."""
        call = self._call("generate", request, hints, _merge(model, None, params, prompt=prompt))
        return await self._run_async(call)  # type: ignore[no-any-return]

    async def embed(
        self,
        model: str | None = None,
        input: str | Sequence[str] | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> PoolEmbedResponse:
        """Embeddings for one string or a list of strings."""
        if input is not None:
            params["input"] = list(input) if not isinstance(input, str) else input
        call = self._call("embed", request, hints, _merge(model, None, params))
        return await self._run_async(call)  # type: ignore[no-any-return]

    def stream_chat(
        self,
        model: str | None = None,
        messages: Sequence[Any] | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> PoolStream[ChatResponse]:
        """Stream chat chunks; fails over to another instance until the first chunk arrives."""
        call = self._call("chat", request, hints, _merge(model, messages, params))
        holder: list[PoolInfo] = []
        return PoolStream(self._stream_async(call, holder), holder)

    def stream_generate(
        self,
        model: str | None = None,
        prompt: str | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> PoolStream[GenerateResponse]:
        """Stream generate chunks; fails over until the first chunk arrives."""
        call = self._call("generate", request, hints, _merge(model, None, params, prompt=prompt))
        holder: list[PoolInfo] = []
        return PoolStream(self._stream_async(call, holder), holder)

    async def execute(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The guide's generic entry point: ``llm/chat``, ``llm/generate`` or ``llm/embed``.

        Returns Ollama's response as a dict, plus ``"pool"`` (instance, attempts, fallback).
        """
        kind, request = _execute_request(method, params)
        call = self._call(kind, None, None, request)
        result = await self._run_async(call)
        return _as_dict(result)

    # -- sync faces ---------------------------------------------------------------------------

    def chat_sync(
        self,
        model: str | None = None,
        messages: Sequence[Any] | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> PoolChatResponse:
        """Sync twin of :meth:`chat`."""
        refuse_on_loop_thread("chat_sync(...)", "await provider.chat(...)")
        call = self._call("chat", request, hints, _merge(model, messages, params))
        return self._run_sync(call)  # type: ignore[no-any-return]

    def generate_sync(
        self,
        model: str | None = None,
        prompt: str | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> PoolGenerateResponse:
        """Sync twin of :meth:`generate`."""
        refuse_on_loop_thread("generate_sync(...)", "await provider.generate(...)")
        call = self._call("generate", request, hints, _merge(model, None, params, prompt=prompt))
        return self._run_sync(call)  # type: ignore[no-any-return]

    def embed_sync(
        self,
        model: str | None = None,
        input: str | Sequence[str] | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> PoolEmbedResponse:
        """Sync twin of :meth:`embed`."""
        refuse_on_loop_thread("embed_sync(...)", "await provider.embed(...)")
        if input is not None:
            params["input"] = list(input) if not isinstance(input, str) else input
        call = self._call("embed", request, hints, _merge(model, None, params))
        return self._run_sync(call)  # type: ignore[no-any-return]

    def stream_chat_sync(
        self,
        model: str | None = None,
        messages: Sequence[Any] | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> SyncPoolStream[ChatResponse]:
        """Sync twin of :meth:`stream_chat`."""
        refuse_on_loop_thread("stream_chat_sync(...)", "async for chunk in provider.stream_chat(...)")
        call = self._call("chat", request, hints, _merge(model, messages, params))
        holder: list[PoolInfo] = []
        return SyncPoolStream(self._stream_sync(call, holder), holder)

    def stream_generate_sync(
        self,
        model: str | None = None,
        prompt: str | None = None,
        *,
        request: Any = None,
        hints: RoutingHints | None = None,
        **params: Any,
    ) -> SyncPoolStream[GenerateResponse]:
        """Sync twin of :meth:`stream_generate`."""
        refuse_on_loop_thread("stream_generate_sync(...)", "async for chunk in provider.stream_generate(...)")
        call = self._call("generate", request, hints, _merge(model, None, params, prompt=prompt))
        holder: list[PoolInfo] = []
        return SyncPoolStream(self._stream_sync(call, holder), holder)

    def execute_sync(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Sync twin of :meth:`execute`."""
        refuse_on_loop_thread("execute_sync(...)", "await provider.execute(...)")
        kind, request = _execute_request(method, params)
        call = self._call(kind, None, None, request)
        return _as_dict(self._run_sync(call))

    # -- status -------------------------------------------------------------------------------

    async def get_pool_status(self) -> dict[str, Any]:
        """The pool status of :meth:`OllamaPoolManager.get_pool_status`."""
        return self.manager.status()

    def status(self) -> dict[str, Any]:
        return self.manager.status()

    def __repr__(self) -> str:
        return f"OllamaPoolProvider(provider_id={self.provider_id!r}, manager={self.manager!r})"


def _merge(
    model: str | None, messages: Sequence[Any] | None, params: dict[str, Any], prompt: str | None = None
) -> dict[str, Any]:
    merged = dict(params)
    if model is not None:
        merged["model"] = model
    if messages is not None:
        merged["messages"] = list(messages)
    if prompt is not None:
        merged["prompt"] = prompt
    return merged


def _execute_request(method: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(params, Mapping):
        raise RequestError(f"params must be a mapping, got {type(params).__name__}", field="params")
    kinds = {"llm/chat": "chat", "llm/generate": "generate", "llm/embed": "embed"}
    kind = kinds.get(method)
    if kind is None:
        raise RequestError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}", field="method")
    request = dict(params)  # never mutate the caller's params
    if kind == "chat" and "messages" not in request and "prompt" in request:
        request["messages"] = [{"role": "user", "content": request.pop("prompt")}]
    return kind, request


def _as_dict(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.model_dump(exclude_none=True)
    data["pool"] = result.pool.as_dict() if result.pool is not None else None
    return data
