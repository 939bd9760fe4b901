"""Relaying one pass-through call to the client: chunk by chunk, nothing buffered.

:class:`Relay` is an ASGI response that does the whole call while it watches the client: it
opens the call (routing, queueing, failover: all before the first chunk), sends the response
head once the first chunk is in (with ``X-Gleitzeit-Instance`` and ``X-Gleitzeit-Attempts``),
then each chunk as it arrives. A failure before the first chunk is an error answer with its own
status; after it, the stream ends the way the API does (an ``{"error": ...}`` line, or an SSE
error event). The client hanging up cancels the call at once, wherever it is: the slot is given
back and the upstream connection closed, which stops the generation on the instance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.gateway.errors import GatewayError, failure
from gleitzeit_llm.gateway.headers import ATTEMPTS, INSTANCE
from gleitzeit_llm.hints import RoutingHints
from gleitzeit_llm.ollama.models import fold_wire_chunks
from gleitzeit_llm.passthrough import passthrough, passthrough_whole

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

    from gleitzeit_llm.provider import OllamaPoolProvider, PoolStream

__all__ = ["NATIVE", "Relay", "Shape", "dumps", "json_bytes", "native_whole"]

dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_bytes(value: Any) -> bytes:
    return dumps(value).encode("utf-8")


@dataclass(frozen=True)
class Shape:
    """How an API writes what Ollama answered: a stream's media type, one chunk, the end of a
    stream, an error inside a stream, a whole answer and an error answer."""

    media_type: str
    chunk: Callable[[dict[str, Any]], bytes | None]  # None: nothing to send for this chunk
    whole: Callable[[list[dict[str, Any]]], Any]  # every chunk -> the one JSON answer
    error_body: Callable[[int, str], Any]
    stream_error: Callable[[str], bytes]
    end: bytes = b""


def native_whole(chunks: list[dict[str, Any]], *, chat: bool) -> dict[str, Any]:
    """A native stream folded into the answer ``"stream": false`` gives (one-object answers as they are)."""
    if len(chunks) == 1:
        return chunks[0]
    folded = fold_wire_chunks(chunks, chat=chat)
    # fold_wire_chunks names every field it folds; Ollama leaves empty ones out (omitempty).
    if chat:
        folded["message"] = {k: v for k, v in folded["message"].items() if v is not None}
    return {k: v for k, v in folded.items() if v is not None}


def _native(chat: bool) -> Shape:
    return Shape(
        media_type="application/x-ndjson",
        chunk=lambda chunk: json_bytes(chunk) + b"\n",
        whole=lambda chunks: native_whole(chunks, chat=chat),
        error_body=lambda status, message: {"error": message},
        stream_error=lambda message: json_bytes({"error": message}) + b"\n",
    )


#: Ollama's own API: NDJSON, folded answers as ``"stream": false`` gives them, ``{"error": ...}``.
NATIVE = {"chat": _native(True), "generate": _native(False)}


class Relay:
    """One pass-through call answered to the client (see the module docstring).

    ``upstream_stream``: Ollama answers with NDJSON (chat, generate; always asked for a stream,
    so the pool measures the first token and bounds every gap); ``client_stream``: the client
    gets the chunks as they come rather than one folded answer.
    """

    def __init__(
        self,
        provider: OllamaPoolProvider,
        path: str,
        body: dict[str, Any],
        hints: RoutingHints,
        shape: Shape,
        *,
        upstream_stream: bool = True,
        client_stream: bool = True,
    ) -> None:
        self.provider = provider
        self.path = path
        self.body = body
        self.hints = hints
        self.shape = shape
        self.upstream_stream = upstream_stream
        self.client_stream = client_stream and upstream_stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A plain task cancelled once, not an anyio cancel scope: a scope cancels every later
        # await in it too, so the stream's own cleanup (giving the connection back) would be
        # cut short; one CancelledError lets the cleanup run to its end.
        relay = asyncio.ensure_future(self._relay(send))
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not relay.done():
                relay.cancel()  # the client left (or the server stops): stop the call now
            watcher.cancel()
            await asyncio.gather(relay, watcher, return_exceptions=True)
        if not relay.cancelled():
            error = relay.exception()
            if error is not None and not isinstance(error, OSError):  # OSError: the client left
                raise error

    async def _relay(self, send: Send) -> None:
        if self.client_stream:
            await self._stream(send)
            return
        try:
            chunks, info = await passthrough_whole(
                self.provider, self.path, self.body, self.hints, stream=self.upstream_stream
            )
        except Exception as exc:
            await self._error(send, self._failure(exc))
            return
        headers = {INSTANCE: info.instance_id, ATTEMPTS: str(info.attempts)}
        await _send_json(send, 200, self.shape.whole(chunks), headers)

    async def _stream(self, send: Send) -> None:
        try:
            chunks = passthrough(self.provider, self.path, self.body, self.hints)
        except Exception as exc:  # a bad hint or a closed pool, before any instance was picked
            await self._error(send, self._failure(exc))
            return
        try:
            try:
                first = await chunks.__anext__()
            except Exception as exc:
                await self._error(send, self._failure(exc))
                return
            await self._relay_chunks(send, chunks, first)
        finally:
            await chunks.aclose()  # the slot and the upstream connection, now

    async def _relay_chunks(self, send: Send, chunks: PoolStream[Any], first: dict[str, Any]) -> None:
        shape = self.shape
        info = chunks.pool
        headers = {} if info is None else {INSTANCE: info.instance_id, ATTEMPTS: str(info.attempts)}
        await _start(send, 200, shape.media_type, headers)
        data = shape.chunk(first)
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        try:
            async for chunk in chunks:
                data = shape.chunk(chunk)
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
        except Exception as exc:
            # Output went out already: end the stream as the API does, with the status kept.
            message = self._failure(exc).message
            await send({"type": "http.response.body", "body": shape.stream_error(message), "more_body": True})
        await send({"type": "http.response.body", "body": shape.end, "more_body": False})

    def _failure(self, exc: BaseException) -> GatewayError:
        return failure(exc, self.provider.manager, self.body.get("model"))

    async def _error(self, send: Send, error: GatewayError) -> None:
        await _send_json(
            send, error.status, self.shape.error_body(error.status, error.message), error.headers
        )


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone away (the request body was read before)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _start(send: Send, status: int, media_type: str, headers: Mapping[str, str]) -> None:
    raw = [(b"content-type", media_type.encode("latin-1"))]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})


async def _send_json(send: Send, status: int, value: Any, headers: Mapping[str, str]) -> None:
    body = json_bytes(value)
    raw = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
