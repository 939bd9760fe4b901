"""One Ollama server over HTTP: the I/O of the two transports; the rules (request building,
timeouts by phase, errors, parsing) are in :class:`~gleitzeit_llm.ollama._core.TransportCore`.

Only the async file is written by hand: ``scripts/unasync.py`` writes the blocking one from it
(``make unasync``). Import the classes from :mod:`gleitzeit_llm.ollama.transport`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from gleitzeit_llm.ollama._core import (
    CHAT,
    DEFAULT_MAX_CONNECTIONS,
    GENERATE,
    Call,
    Endpoint,
    OnFirst,
    TransportBase,
)
from gleitzeit_llm.ollama.models import (
    EmbedRequest,
    EmbedResponse,
    ListResponse,
    ProcessResponse,
    ShowRequest,
    ShowResponse,
    VersionResponse,
)
from gleitzeit_llm.ollama.net import async_http_transport
from gleitzeit_llm.ollama.stream import NDJSONDecoder
from gleitzeit_llm.ollama.timeouts import Timeouts

if TYPE_CHECKING:  # chat and generate are told apart by their Endpoint at run time
    from gleitzeit_llm.ollama.models import ChatRequest, ChatResponse, GenerateRequest, GenerateResponse

__all__ = ["AsyncOllamaTransport", "AsyncResponseStream"]

T = TypeVar("T")
M = TypeVar("M", bound=Any)


class AsyncResponseStream(Generic[T]):
    """The chunks of one streamed response, read with ``async for``; leaving ``async with``
    closes the response. The request is sent on the first iteration."""

    __slots__ = ("_agen",)

    def __init__(self, agen: AsyncGenerator[T, None]) -> None:
        self._agen = agen

    def __aiter__(self) -> AsyncResponseStream[T]:
        return self

    def __anext__(self) -> Any:
        return self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop reading and free the connection (and the server's slot)."""
        await self._agen.aclose()

    async def __aenter__(self) -> AsyncResponseStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncOllamaTransport(TransportBase):
    """Client for one Ollama server.

    ``url`` may carry ``user:pass@`` (sent as basic auth, never shown); a bare ``host[:port]``
    means ``http://`` and port 11434. ``transport`` replaces httpx's network transport (tests
    pass ``httpx.MockTransport`` or respx). Every method takes ``timeouts=`` to override the
    instance's :class:`Timeouts` for one call (a health probe wants seconds, not minutes).
    """

    def __init__(
        self,
        url: str,
        *,
        instance_id: str | None = None,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen, so sharing the default is safe
        headers: Mapping[str, str] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        verify: Any = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._init_core(url, instance_id, timeouts, headers)
        self._client = httpx.AsyncClient(
            **self._core.client_options(
                max_connections=max_connections,
                verify=verify,
                transport=transport,
                make_transport=async_http_transport,
            )
        )

    # -- generation: chat and generate differ only in their endpoint (see _core.CHAT) ---------

    async def chat(
        self, request: ChatRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> ChatResponse:
        """``POST /api/chat`` with ``"stream": false``: the whole answer at once."""
        return await self._answer(CHAT, request, timeouts)

    async def generate(
        self, request: GenerateRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> GenerateResponse:
        """``POST /api/generate`` with ``"stream": false``."""
        return await self._answer(GENERATE, request, timeouts)

    def stream_chat(
        self, request: ChatRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> AsyncResponseStream[ChatResponse]:
        """``POST /api/chat`` streamed: one :class:`ChatResponse` per chunk, the last with ``done``."""
        return self._open_stream(CHAT, request, timeouts)

    def stream_generate(
        self, request: GenerateRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> AsyncResponseStream[GenerateResponse]:
        """``POST /api/generate`` streamed."""
        return self._open_stream(GENERATE, request, timeouts)

    async def collect_chat(
        self,
        request: ChatRequest | Mapping[str, Any],
        *,
        timeouts: Timeouts | None = None,
        on_first: OnFirst = None,
    ) -> ChatResponse:
        """``POST /api/chat`` streamed on the wire, folded into the one answer ``"stream": false``
        gives. The idle timeout then applies per chunk (a long answer never looks hung) and
        ``on_first`` is called when the first chunk arrives (time to first token)."""
        return await self._collect(CHAT, request, timeouts, on_first)

    async def collect_generate(
        self,
        request: GenerateRequest | Mapping[str, Any],
        *,
        timeouts: Timeouts | None = None,
        on_first: OnFirst = None,
    ) -> GenerateResponse:
        """``POST /api/generate`` streamed on the wire and folded (see :meth:`collect_chat`)."""
        return await self._collect(GENERATE, request, timeouts, on_first)

    async def embed(
        self, request: EmbedRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> EmbedResponse:
        """``POST /api/embed``."""
        req = EmbedRequest.coerce(request)
        return await self._call("POST", "/api/embed", req.to_wire(), EmbedResponse, req.model, timeouts)

    # -- pass-through (the gateway): Ollama's JSON as plain dicts, nothing validated or dropped --

    def stream_raw(
        self, path: str, body: dict[str, Any], *, model: str | None = None, timeouts: Timeouts | None = None
    ) -> AsyncResponseStream[dict[str, Any]]:
        """``POST path`` with ``body`` as given (it should ask for a stream): one decoded dict per
        NDJSON chunk, unknown fields kept. Errors are classified as for :meth:`stream_chat`."""
        return AsyncResponseStream(self._stream_raw(path, body, model, timeouts))

    async def request_raw(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        model: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> dict[str, Any]:
        """One request whose answer is a single JSON object, returned as a dict, unknown fields kept."""
        call = self._core.start(method, path, model, timeouts)
        response, content = await self._send_and_read(call, body)
        return self._core.parse_raw(response, content, call)

    # -- inspection (cheap: none of these loads a model) ---------------------------------------

    async def tags(self, *, timeouts: Timeouts | None = None) -> ListResponse:
        """``GET /api/tags``: installed models."""
        return await self._call("GET", "/api/tags", None, ListResponse, None, timeouts)

    async def ps(self, *, timeouts: Timeouts | None = None) -> ProcessResponse:
        """``GET /api/ps``: loaded models."""
        return await self._call("GET", "/api/ps", None, ProcessResponse, None, timeouts)

    async def version(self, *, timeouts: Timeouts | None = None) -> VersionResponse:
        """``GET /api/version``."""
        return await self._call("GET", "/api/version", None, VersionResponse, None, timeouts)

    async def show(
        self, model: str, *, verbose: bool | None = None, timeouts: Timeouts | None = None
    ) -> ShowResponse:
        """``POST /api/show``: details, template and capabilities of ``model``."""
        req = ShowRequest(model=model, verbose=verbose)
        return await self._call("POST", "/api/show", req.to_wire(), ShowResponse, model, timeouts)

    async def ping(self, *, timeouts: Timeouts | None = None) -> bool:
        """``GET /``: ``True`` when the server answers ``Ollama is running``; raises otherwise."""
        call = self._core.start("GET", "/", None, timeouts)
        response, body = await self._send_and_read(call, None)
        return self._core.ping_result(response, body, call)

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncOllamaTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- I/O -----------------------------------------------------------------------------------

    async def _answer(self, endpoint: Endpoint, request: Any, timeouts: Timeouts | None) -> Any:
        path, request_model, response_model = endpoint
        req = request_model.coerce(request)
        return await self._call("POST", path, req.to_wire(stream=False), response_model, req.model, timeouts)

    def _open_stream(
        self, endpoint: Endpoint, request: Any, timeouts: Timeouts | None
    ) -> AsyncResponseStream[Any]:
        path, request_model, response_model = endpoint
        req = request_model.coerce(request)  # validated now, before any I/O
        return AsyncResponseStream(
            self._stream(path, req.to_wire(stream=True), response_model, req.model, timeouts)
        )

    async def _send_and_read(self, call: Call, body: dict[str, Any] | None) -> tuple[httpx.Response, bytes]:
        # The send and its error mapping are written out here and in _ndjson_response rather
        # than shared: a shared coroutine would cost one more await on every call.
        core = self._core
        request = core.build(self._client, call, body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise core.send_error(exc, call) from exc
        try:
            core.enter_body(response, call)
            try:
                content = await response.aread()
            except httpx.HTTPError as exc:
                raise core.body_error(exc, call, response, 0) from exc
        finally:
            core.leave_body(response, call)
            await response.aclose()
        return response, content

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        model: type[M],
        name: str | None,
        timeouts: Timeouts | None,
    ) -> M:
        call = self._core.start(method, path, name, timeouts)
        response, content = await self._send_and_read(call, body)
        return self._core.parse(response, content, model, call)

    @contextlib.asynccontextmanager
    async def _ndjson_response(self, call: Call, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """The response of a streamed request, once it is known to be a stream; closed on exit."""
        core = self._core
        request = core.build(self._client, call, body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise core.send_error(exc, call) from exc
        try:
            core.enter_body(response, call)
            if core.not_a_stream(response):
                try:
                    content = await response.aread()
                except httpx.HTTPError as exc:
                    raise core.body_error(exc, call, response, 0) from exc
                raise core.stream_error(response, content, call)
            yield response
        finally:
            core.leave_body(response, call)
            await response.aclose()

    async def _collect(
        self, endpoint: Endpoint, request: Any, timeouts: Timeouts | None, on_first: OnFirst
    ) -> Any:
        path, request_model, response_model = endpoint
        req = request_model.coerce(request)
        # The chunks stay raw dicts until the end: folded and validated once.
        core = self._core
        call = core.start("POST", path, req.model, timeouts)
        async with self._ndjson_response(call, req.to_wire(stream=True)) as response:
            decoder = NDJSONDecoder(instance=core.instance, url=core.url)
            chunks: list[dict[str, Any]] = []
            try:
                async for data in response.aiter_bytes():
                    got = decoder.feed(data)
                    if got:
                        if not chunks and on_first is not None:
                            on_first()
                        if call.deadline is not None and not decoder.done:
                            core.check_deadline(call, len(chunks))
                        chunks += got
            except httpx.HTTPError as exc:
                raise core.body_error(exc, call, response, len(chunks)) from exc
            chunks += decoder.close()
        return core.fold(response_model, chunks, call)

    async def _stream(
        self, path: str, body: dict[str, Any], model: type[M], name: str | None, timeouts: Timeouts | None
    ) -> AsyncGenerator[M, None]:
        core = self._core
        call = core.start("POST", path, name, timeouts)
        async with self._ndjson_response(call, body) as response:
            # The NDJSON decoder is used directly (not through aiter_ndjson), saving a generator
            # layer per chunk; the behaviour is the same.
            decoder = NDJSONDecoder(instance=core.instance, url=core.url)
            chunks = 0
            try:
                async for data in response.aiter_bytes():
                    for obj in decoder.feed(data):
                        if call.deadline is not None and obj.get("done") is not True:
                            core.check_deadline(call, chunks)
                        item = core.chunk(model, obj, chunks, call)
                        chunks += 1
                        yield item
            except httpx.HTTPError as exc:
                raise core.body_error(exc, call, response, chunks) from exc
            for obj in decoder.close():
                item = core.chunk(model, obj, chunks, call)
                chunks += 1
                yield item

    async def _stream_raw(
        self, path: str, body: dict[str, Any], name: str | None, timeouts: Timeouts | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        core = self._core
        call = core.start("POST", path, name, timeouts)
        async with self._ndjson_response(call, body) as response:
            decoder = NDJSONDecoder(instance=core.instance, url=core.url)
            try:
                async for data in response.aiter_bytes():
                    for obj in decoder.feed(data):
                        if call.deadline is not None and obj.get("done") is not True:
                            core.check_deadline(call, decoder.chunks_received)
                        yield obj
            except httpx.HTTPError as exc:
                raise core.body_error(exc, call, response, decoder.chunks_received) from exc
            for obj in decoder.close():
                yield obj
