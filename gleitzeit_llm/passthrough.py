"""Pass-through calls: an Ollama request body sent through the pool as it is, the answer read
back as plain dicts (unknown fields kept), for the gateway (``gleitzeit-llm serve``).

A pass-through call is a :class:`~gleitzeit_llm.provider._Call` of its own kind: the same send
chain routes it, takes its slot, fails over before the first chunk, falls back to
``fallback_model`` and learns the server's timings from the final chunk; only how the request is
sent and what is learned from a dict differ. The typed calls' hot path is not touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.hints import RoutingHints
from gleitzeit_llm.provider import COLD_LOAD_THRESHOLD, PoolInfo, PoolStream, _Call, keep_alive_seconds

if TYPE_CHECKING:
    from gleitzeit_llm.manager import Lease
    from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["RawRequest", "passthrough", "passthrough_whole"]


@dataclass(frozen=True)
class RawRequest:
    """One Ollama request as the caller wrote it: ``POST path`` with ``body``.

    ``stream``: the answer is an NDJSON stream (chat, generate: the body should ask for one);
    otherwise it is one JSON object (embed, show).
    """

    path: str
    body: Mapping[str, Any]
    model: str
    stream: bool = True

    @property
    def keep_alive(self) -> Any:
        return self.body.get("keep_alive")

    def model_copy(self, *, update: Mapping[str, Any]) -> RawRequest:
        """This request for another model (the fallback), as pydantic's ``model_copy`` does."""
        model = update["model"]
        return dataclasses.replace(self, model=model, body={**self.body, "model": model})


class _RawCall(_Call):
    """A :class:`_Call` whose request and chunks are dicts."""

    request: RawRequest

    def open_stream(self, transport: Any) -> Any:
        request = self.request
        return transport.stream_raw(
            request.path, dict(request.body), model=request.model, timeouts=self.attempt_timeouts()
        )

    def stream_ended(
        self, lease: Lease, error: BaseException | None, final: Any, holder: list[PoolInfo]
    ) -> None:
        # A dict has no ``done`` attribute: a stream left before its done chunk is cancelled.
        if error is None and self.request.stream and final.get("done") is not True:
            error = asyncio.CancelledError()
        super().stream_ended(lease, error, final, holder)

    async def collect_async(
        self, transport: Any, timeouts: Any, on_first: Callable[[], object]
    ) -> list[dict[str, Any]]:
        """Every chunk of one attempt (one item for a one-object answer): the send chain's
        one-shot attempt, so a stream that breaks before the caller saw anything fails over."""
        request = self.request
        if not request.stream:
            answer = await transport.request_raw(
                "POST", request.path, dict(request.body), model=request.model, timeouts=timeouts
            )
            on_first()
            return [answer]
        chunks: list[dict[str, Any]] = []
        async with transport.stream_raw(
            request.path, dict(request.body), model=request.model, timeouts=timeouts
        ) as stream:
            async for chunk in stream:
                if not chunks:
                    on_first()
                chunks.append(chunk)
        return chunks

    def collect_sync(
        self, transport: Any, timeouts: Any, on_first: Callable[[], object]
    ) -> list[dict[str, Any]]:
        raise TypeError("pass-through calls are async only")  # the sync send chain's twin of the above

    def result(self, lease: Lease, answer: Any) -> Any:
        return answer, self.info(lease)

    def finish_kwargs(self, final: Any) -> dict[str, Any]:
        if isinstance(final, list):  # a collected attempt: the server's figures are in its last chunk
            final = final[-1] if final else None
        if not final:
            return {}
        load = final.get("load_duration")
        eval_ns = final.get("eval_duration")
        return {
            "output_tokens": final.get("eval_count"),
            "eval_duration": eval_ns / 1e9 if isinstance(eval_ns, (int, float)) and eval_ns else None,
            "prompt_tokens": final.get("prompt_eval_count"),
            "keep_alive": keep_alive_seconds(self.request.keep_alive),
            "cold_load": bool(isinstance(load, (int, float)) and load / 1e9 > COLD_LOAD_THRESHOLD),
        }


async def passthrough_whole(
    provider: OllamaPoolProvider,
    path: str,
    body: Mapping[str, Any],
    hints: RoutingHints | None = None,
    *,
    stream: bool = True,
) -> tuple[list[dict[str, Any]], PoolInfo]:
    """Like :func:`passthrough`, for a caller that wants the whole answer: every chunk of the
    attempt that succeeded, and who served it (``stream=False``: an endpoint that answers with one
    JSON object, the list has one item). Nothing reaches the caller before the end, so any
    instance failure (a stream that breaks half-way too) fails over, as a library call does."""
    call = _start(provider, path, body, hints, stream)
    return await provider._run_async(call)  # type: ignore[no-any-return]


def _start(
    provider: OllamaPoolProvider, path: str, body: Mapping[str, Any], hints: RoutingHints | None, stream: bool
) -> _RawCall:
    provider._ensure_started()
    request = RawRequest(path, body, body["model"], stream)
    call = _RawCall(provider, "raw", request, hints if hints is not None else RoutingHints())
    call.first_route = call.route()  # hints are checked before any instance is picked
    return call


def passthrough(
    provider: OllamaPoolProvider,
    path: str,
    body: Mapping[str, Any],
    hints: RoutingHints | None = None,
) -> PoolStream[dict[str, Any]]:
    """Send ``body`` (it has a non-empty string ``model`` and asks for a stream) to ``path`` on an
    instance the pool picks, with failover until the first chunk; the chunks come back as dicts.

    Hints are validated here (a bad one raises :class:`~gleitzeit_llm.errors.RequestError` before
    any instance is picked). Use as ``async with passthrough(...) as chunks: async for ...``;
    ``chunks.pool`` says who served once the first chunk is in.
    """
    call = _start(provider, path, body, hints, True)
    holder: list[PoolInfo] = []
    return PoolStream(provider._stream_async(call, holder), holder)
