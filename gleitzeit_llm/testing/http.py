"""A small HTTP/1.1 server: ``h11`` over asyncio streams, keep-alive and chunked responses.

It knows nothing about Ollama. It hands each request to a handler together with an
:class:`Exchange` to answer through, cancels the handler when the client goes away (so a
generation stops and frees its slot), and can drop every connection at once (``stop``) so
clients see their connections reset, like a dying server.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11

__all__ = ["ConnectionDropped", "Exchange", "HttpRequest", "HttpServer"]

logger = logging.getLogger("gleitzeit_llm.testing")

_READ_SIZE = 65536


@dataclass
class HttpRequest:
    """A complete request: method, path (no query), lower-cased headers, body."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class ConnectionDropped(Exception):
    """Raised in a handler after :meth:`Exchange.drop` cut the connection."""


_date_cache: tuple[int, bytes] = (-1, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True).encode())
    return _date_cache[1]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class Exchange:
    """The response side of one request: a whole body, or a chunked stream of pieces."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter, head: bool) -> None:
        self._conn = conn
        self._writer = writer
        self._head = head
        self.started = False
        self.finished = False
        self.status: int | None = None
        #: Called just before the last bytes of the response are written, so that whatever a
        #: client may check after reading the response (the request log) is already complete.
        self.before_end: Callable[[], None] | None = None

    async def send(
        self, status: int, content_type: str, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Send a complete response with ``Content-Length`` (no body bytes for HEAD)."""
        self._check_open()
        # Go writes headers sorted by name: Content-Length, Content-Type, Date.
        fields = [
            (b"Content-Length", str(len(body)).encode()),
            (b"Content-Type", content_type.encode()),
            (b"Date", _http_date()),
        ]
        fields += [(k.encode(), v.encode()) for k, v in headers or ()]
        self.started = True
        self.status = status
        out = self._conn.send(h11.Response(status_code=status, headers=fields, reason=_reason(status)))
        if body and not self._head:
            out += self._conn.send(h11.Data(data=body))
        out += self._conn.send(h11.EndOfMessage())
        self.finished = True
        if self.before_end is not None:
            self.before_end()
        await self._write(out)

    async def start(self, status: int, content_type: str) -> None:
        """Send the headers of a chunked response."""
        self._check_open()
        fields = [
            (b"Content-Type", content_type.encode()),
            (b"Date", _http_date()),
            (b"Transfer-Encoding", b"chunked"),
        ]
        self.started = True
        self.status = status
        await self._write(
            self._conn.send(h11.Response(status_code=status, headers=fields, reason=_reason(status)))
        )

    async def write(self, data: bytes) -> None:
        """Send one piece of a chunked response (one HTTP chunk)."""
        if data and not self._head:
            await self._write(self._conn.send(h11.Data(data=data)))

    async def end(self) -> None:
        """Finish a chunked response."""
        if not self.finished:
            self.finished = True
            if self.before_end is not None:
                self.before_end()
            await self._write(self._conn.send(h11.EndOfMessage()))

    def drop(self) -> None:
        """Cut the connection now (no more bytes, no chunked terminator) and unwind the handler."""
        self._writer.transport.abort()
        raise ConnectionDropped()

    def _check_open(self) -> None:
        if self.started:
            raise RuntimeError("response already started")

    async def _write(self, data: bytes) -> None:
        if self._writer.transport.is_closing():
            raise ConnectionResetError("client connection closed")
        self._writer.write(data)
        await self._writer.drain()


Handler = Callable[[HttpRequest, Exchange], Awaitable[None]]


class HttpServer:
    """Serves ``handler`` on ``host:port`` until :meth:`stop`; can listen again on the same port."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again); the first start with port 0 picks a free port that later starts reuse."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and reset every open connection; in-flight handlers are cancelled."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connections = dict(self._connections)
        for task, writer in connections.items():
            _abort(writer)
            task.cancel()
        if connections:
            await asyncio.gather(*connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, run inside connection_made: every accepted connection is registered
        # before anything can cancel its task, so stop() aborts even one whose task never started
        # (a coroutine callback cancelled before its first step would leak its socket).
        if self._server is None:  # accepted in the instant the listener closed
            _abort(writer)
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections[task] = writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, ConnectionDropped, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # server stopping: the connection was aborted already
        except Exception:  # a bug must not kill the server silently
            logger.exception("emulator connection failed")
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                request = await self._read_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                await self._bad_request(conn, writer, exc)
                return
            if request is None:
                return
            exchange = Exchange(conn, writer, head=request.method == "HEAD")
            if not await self._run_handler(request, exchange, conn, reader):
                _abort(writer)  # the client left; nothing more to say
                return
            if not exchange.finished:
                await self._finish_broken(exchange)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> HttpRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_SIZE))
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                path, _, query = target.partition("?")
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
                return HttpRequest(head.method.decode("latin-1"), path, query, headers, bytes(body))
            elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
                return None

    async def _run_handler(
        self, request: HttpRequest, exchange: Exchange, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> bool:
        """Run the handler while watching for the client going away; False if it went away."""
        handler = asyncio.ensure_future(self.handler(request, exchange))
        watcher = asyncio.ensure_future(_watch_for_close(conn, reader))
        try:
            await asyncio.wait((handler, watcher), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            handler.cancel()
            watcher.cancel()
            await asyncio.gather(handler, watcher, return_exceptions=True)
            raise
        if handler.done():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            exc = handler.exception()
            if exc is not None:
                raise exc
            return True
        handler.cancel()  # the client disconnected: stop generating, free the slot
        await asyncio.gather(handler, return_exceptions=True)
        return False

    async def _finish_broken(self, exchange: Exchange) -> None:
        # The handler returned without completing its answer: never leave a client hanging.
        if not exchange.started:
            await exchange.send(500, "application/json; charset=utf-8", b'{"error":"internal error"}')
        else:
            await exchange.end()

    async def _bad_request(self, conn: h11.Connection, writer: asyncio.StreamWriter, exc: Exception) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(Exception):
            exchange = Exchange(conn, writer, head=False)
            await exchange.send(400, "text/plain; charset=utf-8", b"400 Bad Request")


async def _watch_for_close(conn: h11.Connection, reader: asyncio.StreamReader) -> None:
    """Return when the client closes its side; bytes it sends meanwhile wait for the next cycle."""
    while True:
        try:
            data = await reader.read(_READ_SIZE)
        except ConnectionError:
            return
        if not data:
            return
        conn.receive_data(data)


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()
