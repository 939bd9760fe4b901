"""The network layer under httpx: connection pools with our own httpcore network backends.

httpx's default transports do three things this library cannot live with:

* the sync backend resolves names inside ``socket.create_connection`` with no timeout, so a
  hanging DNS lookup blocks a sync call far past its connect timeout (the async backend bounds
  the lookup with the connect timeout already);
* httpcore takes a read timeout once per response body and applies it to every read, so a
  total deadline cannot shrink the wait for the next chunk as it approaches;
* every client builds an SSL context (about 25 ms with certifi's bundle), even for ``http://``.

Here the sync backend resolves in a helper thread bounded by the connect timeout; every
connection's stream is a :class:`DeadlineStream` whose reads are capped by the deadline of the
request it is serving (set by the transport, see ``TransportCore.enter_body``); and SSL
contexts are made only for ``https://`` URLs, once per setting, shared by every pool.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from functools import lru_cache
from typing import Any

import httpcore
import httpx

__all__ = [
    "AsyncDeadlineStream",
    "DeadlineStream",
    "async_http_transport",
    "resolve",
    "ssl_context_for",
    "sync_http_transport",
]


# -- name resolution ---------------------------------------------------------------------------


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses of ``host``, looked up within ``timeout`` seconds.

    ``getaddrinfo`` cannot be interrupted, so the lookup runs in a daemon thread that is
    abandoned (and finishes on its own) when the timeout passes: the caller gets
    ``httpcore.ConnectTimeout`` at the timeout, not when the resolver gives up.
    """
    if _is_ip(host):
        return [host]
    if timeout is None:
        return _addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    answer: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller below
            answer.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"gleitzeit-resolve-{host}", daemon=True).start()
    if not done.wait(timeout):
        raise httpcore.ConnectTimeout(f"name resolution of {host!r} took longer than {timeout:g}s")
    result = answer[0]
    if isinstance(result, BaseException):
        raise httpcore.ConnectError(str(result)) from result
    return _addresses(result)


def _addresses(infos: list[Any]) -> list[str]:
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# -- streams whose reads stop at a deadline ---------------------------------------------------


def _capped(timeout: float | None, deadline: float | None) -> float | None:
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("total timeout exceeded")
    return left if timeout is None or left < timeout else timeout


class DeadlineStream(httpcore.NetworkStream):
    """A connection's stream; while ``deadline`` (monotonic seconds) is set, no read waits past it."""

    __slots__ = ("_stream", "deadline")

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self.deadline: float | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _capped(timeout, self.deadline))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    """Async twin of :class:`DeadlineStream`."""

    __slots__ = ("_stream", "deadline")

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self.deadline: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, _capped(timeout, self.deadline))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return AsyncDeadlineStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


# -- network backends --------------------------------------------------------------------------


class _SyncBackend(httpcore.SyncBackend):
    """httpcore's sync backend, with name resolution bounded by the connect timeout."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Exception | None = None
        for address in resolve(host, port, timeout):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within {timeout:g}s")
            try:
                stream = super().connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc  # the next address may answer (localhost: ::1, then 127.0.0.1)
                continue
            return DeadlineStream(stream)
        raise last or httpcore.ConnectError(f"{host!r} resolved to no address")


class _AsyncBackend(httpcore.AnyIOBackend):
    """httpcore's AnyIO backend (its connect timeout covers name resolution already)."""

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        # Connects as AnyIOBackend does (same arguments); only the stream is wrapped.
        return AsyncDeadlineStream(await super().connect_tcp(*args, **kwargs))


# -- SSL contexts ------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _default_context(verify: bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=verify)


def ssl_context_for(url: str, verify: Any) -> ssl.SSLContext | None:
    """The SSL context for ``url``: ``None`` for ``http://`` (no TLS, nothing to build), else
    ``verify`` itself when it is a context, or one shared context per ``True``/``False``."""
    if not url.lower().startswith("https:"):
        return None
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str):
        from gleitzeit_llm.ollama.tls import tls_verify

        return tls_verify(verify)  # type: ignore[return-value]
    return _default_context(bool(verify))


# -- transports --------------------------------------------------------------------------------


def _pool_options(limits: httpx.Limits) -> dict[str, Any]:
    return {
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "http1": True,
        "http2": False,
    }


class _HTTPTransport(httpx.HTTPTransport):
    # httpx's request handling and error mapping, over a pool of our own making: httpx's
    # constructor would build an SSL context and cannot take a network backend.
    def __init__(self, ssl_context: ssl.SSLContext | None, limits: httpx.Limits) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, network_backend=_SyncBackend(), **_pool_options(limits)
        )


class _AsyncHTTPTransport(httpx.AsyncHTTPTransport):
    def __init__(self, ssl_context: ssl.SSLContext | None, limits: httpx.Limits) -> None:
        self._pool = httpcore.AsyncConnectionPool(  # type: ignore[assignment]
            ssl_context=ssl_context, network_backend=_AsyncBackend(), **_pool_options(limits)
        )


def sync_http_transport(url: str, verify: Any, limits: httpx.Limits) -> httpx.BaseTransport:
    """A connection pool for one server: bounded name resolution, per-read deadlines, TLS only
    for ``https://``."""
    return _HTTPTransport(ssl_context_for(url, verify), limits)


def async_http_transport(url: str, verify: Any, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """Async twin of :func:`sync_http_transport`."""
    return _AsyncHTTPTransport(ssl_context_for(url, verify), limits)
