"""A small HTTP/1.1 server: ``h11`` over asyncio streams, keep-alive and chunked responses.

It knows nothing about Ollama. It hands each request to a handler together with an
:class:`Exchange` to answer through, cancels the handler when the client goes away (so a
generation stops and frees its slot), and can drop every connection at once (``stop``) so
clients see their connections reset, like a dying server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import errno
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11

__all__ = ["ConnectionDropped", "Exchange", "HttpRequest", "HttpServer", "require_basic_auth"]

logger = logging.getLogger("gleitzeit_llm.testing")

_READ_SIZE = 65536
_BACKLOG = 1024


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


def require_basic_auth(handler: Handler, user: str, password: str) -> Handler:
    """``handler`` behind HTTP basic auth, as a reverse proxy in front of Ollama would put it:
    a request without these credentials gets 401 and never reaches ``handler``."""

    async def guarded(request: HttpRequest, ex: Exchange) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(token, validate=True).decode() if scheme.lower() == "basic" else None
        except (binascii.Error, UnicodeDecodeError):
            given = None
        if given != f"{user}:{password}":
            headers = [("WWW-Authenticate", 'Basic realm="ollama"')]
            await ex.send(401, "text/plain", b"401 unauthorized", headers)
            return
        await handler(request, ex)

    return guarded


class _Connection:
    """One accepted socket; ``writer`` is set once its transport exists, ``closed`` resolves once
    the transport has closed the socket."""

    __slots__ = ("closed", "sock", "writer")

    def __init__(self, sock: socket.socket, closed: asyncio.Future[None]) -> None:
        self.sock = sock
        self.closed = closed
        self.writer: asyncio.StreamWriter | None = None


class _Protocol(asyncio.StreamReaderProtocol):
    """A stream protocol that resolves a future of ours when the connection is lost.

    The transport closes its socket right after ``connection_lost`` returns, in the same loop
    step, so whoever awaits the future resumes with the socket closed. (``StreamWriter.wait_closed``
    would do, but its future is shared: cancelling one task waiting on it cancels it for all.)
    """

    def __init__(self, reader: asyncio.StreamReader, closed: asyncio.Future[None]) -> None:
        super().__init__(reader)
        self._lost = closed

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if not self._lost.done():
                self._lost.set_result(None)


class HttpServer:
    """Serves ``handler`` on ``host:port`` until :meth:`stop`; can listen again on the same port.

    It accepts connections itself instead of through :func:`asyncio.start_server`: asyncio's
    server accepts a socket in one loop step and builds its transport in a task of a later
    step, so a server closed in between loses the socket (on Python 3.11 the transport's
    constructor fails in ``Server._attach`` and the error is swallowed; a loop closed first
    cancels the task before it runs). Here every socket is registered the moment it is accepted,
    and :meth:`stop` returns only when each one it accepted is closed.
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context  # serve HTTPS with this server-side context
        self._listeners: list[socket.socket] = []
        self._generation = 0  # bumped by stop(): connections of an older generation are dropped
        self._retry: asyncio.TimerHandle | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        #: TCP connections accepted since construction (tests check connection reuse with it).
        self.accepted = 0

    @property
    def listening(self) -> bool:
        return bool(self._listeners)

    @property
    def open_connections(self) -> int:
        """TCP connections open now (a client that closed its socket no longer counts)."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen (again); the first start with port 0 picks a free port that later starts reuse."""
        if self._listeners:
            return
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        addresses = dict.fromkeys((family, kind, proto, address) for family, kind, proto, _, address in infos)
        listeners: list[socket.socket] = []
        try:
            for family, kind, proto, address in addresses:
                listener = socket.socket(family, kind, proto)
                listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if listeners[0] is not listener and self.port == 0:
                    address = (address[0], listeners[0].getsockname()[1], *address[2:])
                listener.bind(address)
                listener.listen(_BACKLOG)
                listener.setblocking(False)
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        self.port = listeners[0].getsockname()[1]
        self._listeners = listeners
        for listener in listeners:
            loop.add_reader(listener.fileno(), self._accept, listener, self._generation)

    async def stop(self) -> None:
        """Stop listening and reset every open connection; in-flight handlers are cancelled.

        Returns when every socket this server accepted is closed.
        """
        loop = asyncio.get_running_loop()
        listeners, self._listeners = self._listeners, []
        self._generation += 1
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for listener in listeners:
            loop.remove_reader(listener.fileno())
            listener.close()
        connections = dict(self._connections)
        for task, connection in connections.items():
            if connection.writer is not None:
                _abort(connection.writer)
                task.cancel()
            else:
                # Still being set up; the task aborts it itself once its transport exists. A TLS
                # handshake may wait on the client for long: cut it short.
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)
        if connections:
            await asyncio.gather(*connections, return_exceptions=True)
        for connection in connections.values():
            if connection.writer is None:  # no transport got to own it
                connection.sock.close()
            else:
                await asyncio.shield(connection.closed)

    def _accept(self, listener: socket.socket, generation: int) -> None:
        # Runs when a listener is readable. Each socket is registered before this returns, so no
        # later step (stop(), a closed loop) can lose it.
        if generation != self._generation:
            return
        loop = asyncio.get_running_loop()
        for _ in range(_BACKLOG):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: pause accepting instead of spinning on a readable socket
                    logger.warning("emulator: accept() failed (%s); retrying in 1 s", exc)
                    loop.remove_reader(listener.fileno())
                    self._retry = loop.call_later(1.0, self._resume, listener, generation)
                else:
                    logger.exception("emulator: accept() failed")
                return
            self.accepted += 1
            sock.setblocking(False)
            task = loop.create_task(self._serve(sock, generation))
            self._connections[task] = _Connection(sock, loop.create_future())

    def _resume(self, listener: socket.socket, generation: int) -> None:
        self._retry = None
        if generation == self._generation and listener in self._listeners:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener, generation)

    async def _serve(self, sock: socket.socket, generation: int) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = self._connections[task]
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = _Protocol(reader, connection.closed)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock=sock, ssl=self.ssl_context
            )
        except BaseException as exc:
            # no transport owns the socket (or it failed half-way): close it here
            sock.close()
            self._connections.pop(task, None)
            if isinstance(exc, OSError):  # a TLS handshake that failed or was cut: that client's loss
                return
            raise
        writer = connection.writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            if generation != self._generation:  # the server stopped while this one was set up
                _abort(writer)
                return
            await self._serve_connection(reader, writer)
        except (ConnectionError, ConnectionDropped, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # server stopping: the connection was aborted already
        except Exception:  # a bug must not kill the server silently
            logger.exception("emulator connection failed")
        finally:
            writer.close()
            try:
                # registered until its socket is closed, so stop() waits for this one too
                await asyncio.shield(connection.closed)
            finally:
                self._connections.pop(task, None)

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
            # Take the handler's outcome before the next await: if this task is cancelled while
            # it waits for the watcher (the server stopping), an exception left in the handler
            # would be reported as "Task exception was never retrieved".
            exc = handler.exception()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
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
