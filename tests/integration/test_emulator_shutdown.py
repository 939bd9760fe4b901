"""Shutdown leaves no socket behind: every connection the emulator accepted is closed by the time
``stop()``/``close()`` returns, even one accepted in the instant the server stopped (issue 8).

Each test records the sockets the server side accepts (``socket.socket.accept`` wrapped) and checks
them right after the stop returns; a leaked socket would also surface as an unclosed-socket
ResourceWarning, which the pytest configuration turns into an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import struct
from collections.abc import Iterator

import httpx
import pytest

from gleitzeit_llm.testing import OllamaEmulator
from gleitzeit_llm.testing.http import Exchange, HttpRequest, HttpServer


@pytest.fixture
def accepted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """Every socket accepted in this process during the test (the clients only connect)."""
    sockets: list[socket.socket] = []
    original = socket.socket.accept

    def accept(self: socket.socket) -> tuple[socket.socket, object]:
        conn, address = original(self)
        sockets.append(conn)
        return conn, address

    monkeypatch.setattr(socket.socket, "accept", accept)
    yield sockets
    gc.collect()  # a leaked socket warns now, inside the test, not in some later one


def _still_open(sockets: list[socket.socket]) -> list[socket.socket]:
    return [s for s in sockets if s.fileno() != -1]


def _connect(port: int, count: int, *, send: bytes = b"") -> list[socket.socket]:
    """Connect without waiting for the server to accept (the kernel completes the handshake)."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        if send:
            client.sendall(send)
        clients.append(client)
    return clients


def _reset(client: socket.socket) -> None:
    # close with SO_LINGER 0: the server sees a reset, like an aborted client
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


async def _hello(request: HttpRequest, exchange: Exchange) -> None:
    await exchange.send(200, "text/plain", b"hello")


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 4])
async def test_http_server_stop_closes_connections_accepted_in_the_same_instant(
    accepted: list[socket.socket], yields: int
) -> None:
    # Clients wait in the listen backlog; the loop accepts them while stop() runs. Yielding 0..4
    # times first moves stop() across the steps of accepting (readable listener, accepted
    # socket, transport being built, connection registered). With asyncio.start_server a
    # socket accepted just before the server closed was never closed.
    server = HttpServer(_hello)
    await server.start()
    for _ in range(3):
        clients = _connect(server.port, 16, send=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(yields):
            await asyncio.sleep(0)
        await server.stop()
        assert server._connections == {}
        assert _still_open(accepted) == []
        for client in clients:
            client.close()
        await server.start()
    await server.stop()
    assert _still_open(accepted) == []


def test_close_right_after_connections_arrive_leaves_no_socket_open(accepted: list[socket.socket]) -> None:
    for round_ in range(15):
        emulator = OllamaEmulator(time_scale=0).start()
        clients = _connect(emulator.port, 24)
        if round_ % 3 == 1:
            for client in clients[::2]:
                _reset(client)
        if round_ % 3 == 2:
            emulator.stop()  # a stop with its own accepts in flight, then close with nothing left
            assert emulator._http._connections == {}
            assert _still_open(accepted) == []
        emulator.close()
        assert emulator._http._connections == {}
        assert _still_open(accepted) == []
        for client in clients:
            client.close()
    assert accepted, "no connection was accepted: the test exercised nothing"


def test_stop_with_streams_in_flight_closes_every_connection(accepted: list[socket.socket]) -> None:
    emulator = OllamaEmulator(
        models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, reply_tokens=100_000, time_scale=1.0
    )
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with emulator, contextlib.ExitStack() as stack:
        client = stack.enter_context(httpx.Client(base_url=emulator.url, timeout=10))
        streams = [stack.enter_context(client.stream("POST", "/api/chat", json=body)) for _ in range(6)]
        first = json.loads(next(streams[0].iter_lines()))  # a generation is under way
        assert first["done"] is False
        emulator.stop()
        assert emulator._http._connections == {}
        assert len(accepted) >= 6 and _still_open(accepted) == []
        emulator.start()  # same port, fresh connections: served normally
        assert httpx.get(f"{emulator.url}/api/version", timeout=10).status_code == 200
    assert _still_open(accepted) == []
