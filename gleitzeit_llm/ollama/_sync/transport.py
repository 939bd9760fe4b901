# Generated from gleitzeit_llm/ollama/_async/transport.py by scripts/unasync.py, do not edit.
# Change that file instead, then run `make unasync`.
"""One Ollama server over HTTP: the I/O of the two transports; the rules (request building,
timeouts by phase, errors, parsing) are in :class:`~gleitzeit_llm.ollama._core.TransportCore`.

Only the async file is written by hand: ``scripts/unasync.py`` writes the blocking one from it
(``make unasync``). Import the classes from :mod:`gleitzeit_llm.ollama.transport`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Mapping
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
from gleitzeit_llm.ollama.net import sync_http_transport
from gleitzeit_llm.ollama.stream import NDJSONDecoder
from gleitzeit_llm.ollama.timeouts import Timeouts

if TYPE_CHECKING:  # chat and generate are told apart by their Endpoint at run time
    from gleitzeit_llm.ollama.models import ChatRequest, ChatResponse, GenerateRequest, GenerateResponse

__all__ = ["OllamaTransport", "ResponseStream"]

T = TypeVar("T")
M = TypeVar("M", bound=Any)


class ResponseStream(Generic[T]):
    """The chunks of one streamed response, read with ``for``; leaving ``with``
    closes the response. The request is sent on the first iteration."""

    __slots__ = ("_gen",)

    def __init__(self, gen: Generator[T, None, None]) -> None:
        self._gen = gen

    def __iter__(self) -> ResponseStream[T]:
        return self

    def __next__(self) -> Any:
        return self._gen.__next__()

    def close(self) -> None:
        """Stop reading and free the connection (and the server's slot)."""
        self._gen.close()

    def __enter__(self) -> ResponseStream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class OllamaTransport(TransportBase):
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._init_core(url, instance_id, timeouts, headers)
        self._client = httpx.Client(
            **self._core.client_options(
                max_connections=max_connections,
                verify=verify,
                transport=transport,
                make_transport=sync_http_transport,
            )
        )

    # -- generation: chat and generate differ only in their endpoint (see _core.CHAT) ---------

    def chat(
        self, request: ChatRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> ChatResponse:
        """``POST /api/chat`` with ``"stream": false``: the whole answer at once."""
        return self._answer(CHAT, request, timeouts)

    def generate(
        self, request: GenerateRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> GenerateResponse:
        """``POST /api/generate`` with ``"stream": false``."""
        return self._answer(GENERATE, request, timeouts)

    def stream_chat(
        self, request: ChatRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> ResponseStream[ChatResponse]:
        """``POST /api/chat`` streamed: one :class:`ChatResponse` per chunk, the last with ``done``."""
        return self._open_stream(CHAT, request, timeouts)

    def stream_generate(
        self, request: GenerateRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> ResponseStream[GenerateResponse]:
        """``POST /api/generate`` streamed."""
        return self._open_stream(GENERATE, request, timeouts)

    def collect_chat(
        self,
        request: ChatRequest | Mapping[str, Any],
        *,
        timeouts: Timeouts | None = None,
        on_first: OnFirst = None,
    ) -> ChatResponse:
        """``POST /api/chat`` streamed on the wire, folded into the one answer ``"stream": false``
        gives. The idle timeout then applies per chunk (a long answer never looks hung) and
        ``on_first`` is called when the first chunk arrives (time to first token)."""
        return self._collect(CHAT, request, timeouts, on_first)

    def collect_generate(
        self,
        request: GenerateRequest | Mapping[str, Any],
        *,
        timeouts: Timeouts | None = None,
        on_first: OnFirst = None,
    ) -> GenerateResponse:
        """``POST /api/generate`` streamed on the wire and folded (see :meth:`collect_chat`)."""
        return self._collect(GENERATE, request, timeouts, on_first)

    def embed(
        self, request: EmbedRequest | Mapping[str, Any], *, timeouts: Timeouts | None = None
    ) -> EmbedResponse:
        """``POST /api/embed``."""
        req = EmbedRequest.coerce(request)
        return self._call("POST", "/api/embed", req.to_wire(), EmbedResponse, req.model, timeouts)

    # -- pass-through (the gateway): Ollama's JSON as plain dicts, nothing validated or dropped --

    def stream_raw(
        self, path: str, body: dict[str, Any], *, model: str | None = None, timeouts: Timeouts | None = None
    ) -> ResponseStream[dict[str, Any]]:
        """``POST path`` with ``body`` as given (it should ask for a stream): one decoded dict per
        NDJSON chunk, unknown fields kept. Errors are classified as for :meth:`stream_chat`."""
        return ResponseStream(self._stream_raw(path, body, model, timeouts))

    def request_raw(
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
        response, content = self._send_and_read(call, body)
        return self._core.parse_raw(response, content, call)

    # -- inspection (cheap: none of these loads a model) ---------------------------------------

    def tags(self, *, timeouts: Timeouts | None = None) -> ListResponse:
        """``GET /api/tags``: installed models."""
        return self._call("GET", "/api/tags", None, ListResponse, None, timeouts)

    def ps(self, *, timeouts: Timeouts | None = None) -> ProcessResponse:
        """``GET /api/ps``: loaded models."""
        return self._call("GET", "/api/ps", None, ProcessResponse, None, timeouts)

    def version(self, *, timeouts: Timeouts | None = None) -> VersionResponse:
        """``GET /api/version``."""
        return self._call("GET", "/api/version", None, VersionResponse, None, timeouts)

    def show(
        self, model: str, *, verbose: bool | None = None, timeouts: Timeouts | None = None
    ) -> ShowResponse:
        """``POST /api/show``: details, template and capabilities of ``model``."""
        req = ShowRequest(model=model, verbose=verbose)
        return self._call("POST", "/api/show", req.to_wire(), ShowResponse, model, timeouts)

    def ping(self, *, timeouts: Timeouts | None = None) -> bool:
        """``GET /``: ``True`` when the server answers ``Ollama is running``; raises otherwise."""
        call = self._core.start("GET", "/", None, timeouts)
        response, body = self._send_and_read(call, None)
        return self._core.ping_result(response, body, call)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> OllamaTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- I/O -----------------------------------------------------------------------------------

    def _answer(self, endpoint: Endpoint, request: Any, timeouts: Timeouts | None) -> Any:
        path, request_model, response_model = endpoint
        req = request_model.coerce(request)
        return self._call("POST", path, req.to_wire(stream=False), response_model, req.model, timeouts)

    def _open_stream(
        self, endpoint: Endpoint, request: Any, timeouts: Timeouts | None
    ) -> ResponseStream[Any]:
        path, request_model, response_model = endpoint
        req = request_model.coerce(request)  # validated now, before any I/O
        return ResponseStream(
            self._stream(path, req.to_wire(stream=True), response_model, req.model, timeouts)
        )

    def _send_and_read(self, call: Call, body: dict[str, Any] | None) -> tuple[httpx.Response, bytes]:
        # The send and its error mapping are written out here and in _ndjson_response rather
        # than shared: a shared coroutine would cost one more on every call.
        core = self._core
        request = core.build(self._client, call, body)
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise core.send_error(exc, call) from exc
        try:
            core.enter_body(response, call)
            try:
                content = response.read()
            except httpx.HTTPError as exc:
                raise core.body_error(exc, call, response, 0) from exc
        finally:
            core.leave_body(response, call)
            response.close()
        return response, content

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        model: type[M],
        name: str | None,
        timeouts: Timeouts | None,
    ) -> M:
        call = self._core.start(method, path, name, timeouts)
        response, content = self._send_and_read(call, body)
        return self._core.parse(response, content, model, call)

    @contextlib.contextmanager
    def _ndjson_response(self, call: Call, body: dict[str, Any]) -> Iterator[httpx.Response]:
        """The response of a streamed request, once it is known to be a stream; closed on exit."""
        core = self._core
        request = core.build(self._client, call, body)
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise core.send_error(exc, call) from exc
        try:
            core.enter_body(response, call)
            if core.not_a_stream(response):
                try:
                    content = response.read()
                except httpx.HTTPError as exc:
                    raise core.body_error(exc, call, response, 0) from exc
                raise core.stream_error(response, content, call)
            yield response
        finally:
            core.leave_body(response, call)
            response.close()

    def _collect(self, endpoint: Endpoint, request: Any, timeouts: Timeouts | None, on_first: OnFirst) -> Any:
        path, request_model, response_model = endpoint
        req = request_model.coerce(request)
        # The chunks stay raw dicts until the end: folded and validated once.
        core = self._core
        call = core.start("POST", path, req.model, timeouts)
        with self._ndjson_response(call, req.to_wire(stream=True)) as response:
            decoder = NDJSONDecoder(instance=core.instance, url=core.url)
            chunks: list[dict[str, Any]] = []
            try:
                for data in response.iter_bytes():
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

    def _stream(
        self, path: str, body: dict[str, Any], model: type[M], name: str | None, timeouts: Timeouts | None
    ) -> Generator[M, None, None]:
        core = self._core
        call = core.start("POST", path, name, timeouts)
        with self._ndjson_response(call, body) as response:
            # The NDJSON decoder is used directly (not through aiter_ndjson), saving a generator
            # layer per chunk; the behaviour is the same.
            decoder = NDJSONDecoder(instance=core.instance, url=core.url)
            chunks = 0
            try:
                for data in response.iter_bytes():
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

    def _stream_raw(
        self, path: str, body: dict[str, Any], name: str | None, timeouts: Timeouts | None
    ) -> Generator[dict[str, Any], None, None]:
        core = self._core
        call = core.start("POST", path, name, timeouts)
        with self._ndjson_response(call, body) as response:
            decoder = NDJSONDecoder(instance=core.instance, url=core.url)
            try:
                for data in response.iter_bytes():
                    for obj in decoder.feed(data):
                        if call.deadline is not None and obj.get("done") is not True:
                            core.check_deadline(call, decoder.chunks_received)
                        yield obj
            except httpx.HTTPError as exc:
                raise core.body_error(exc, call, response, decoder.chunks_received) from exc
            for obj in decoder.close():
                yield obj
