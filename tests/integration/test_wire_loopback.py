"""The transports over real sockets, against a tiny scripted HTTP/1.1 server on 127.0.0.1.

Each test scripts exactly what the server writes and when: chunk boundaries that split lines and
UTF-8 characters, a connection closed mid-stream, a server that never sends headers, one that
stalls between chunks, a port nobody listens on. What matters here is what httpx and the kernel
really do with those bytes, which a mock transport cannot show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from gleitzeit_llm.errors import (
    InstanceBusyError,
    InstanceFailedError,
    InstanceTimeoutError,
    StreamInterruptedError,
)
from gleitzeit_llm.ollama import (
    AsyncOllamaTransport,
    AsyncResponseStream,
    ChatResponse,
    OllamaTransport,
    ResponseStream,
    Timeouts,
    aggregate_chat,
)

HELLO = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


def line(content: str, *, done: bool = False) -> bytes:
    obj: dict[str, Any] = {
        "model": "llama3.2",
        "created_at": "2025-10-26T17:21:21.196249Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        obj.update(done_reason="stop", total_duration=900, load_duration=100, eval_count=3, eval_duration=500)
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


LINES = [line("Grüße"), line(" aus"), line(" 🌍"), line("!", done=True)]
STREAM = b"".join(LINES)


class Conn:
    """The server side of one request: what a script may write."""

    def __init__(self, server: LoopbackServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer

    async def head(
        self, status: int = 200, content_type: str = "application/x-ndjson", **headers: str
    ) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Transfer-Encoding: chunked"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        lines.append("Connection: close")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def respond(
        self, status: int, body: bytes, content_type: str = "application/json", **headers: str
    ) -> None:
        await self.head(status, content_type, **headers)
        await self.chunk(body)
        await self.end()

    async def hang(self) -> None:
        """Hold the connection open until the client leaves (or the test ends)."""
        await self.until_client_leaves()

    async def until_client_leaves(self) -> None:
        while await self.reader.read(4096):
            pass
        self.server.client_left.set()


Script = Callable[[Conn, Any], Awaitable[None]]


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 running in its own thread; ``script`` answers each request."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.client_left = threading.Event()
        self.bodies: list[Any] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for header in head.decode("latin-1").split("\r\n"):
                name, _, value = header.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            self.bodies.append(json.loads(body) if body else None)
            await self.script(Conn(self, reader, writer), self.bodies[-1])
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)


@contextlib.contextmanager
def serve(script: Script) -> Iterator[LoopbackServer]:
    with LoopbackServer(script) as server:
        yield server


@pytest.fixture(params=["async", "sync"])
def flavour(request: pytest.FixtureRequest) -> str:
    return request.param


def make(flavour: str, url: str, **kwargs: Any) -> Any:
    cls = AsyncOllamaTransport if flavour == "async" else OllamaTransport
    return cls(url, instance_id="local", **kwargs)


async def run(transport: Any, method: str, *args: Any) -> Any:
    """Call ``method`` on either flavour (sync calls run in a thread); streams are read to the end."""
    if isinstance(transport, OllamaTransport):

        def call() -> Any:
            result = getattr(transport, method)(*args)
            return list(result) if isinstance(result, ResponseStream) else result

        return await asyncio.to_thread(call)
    result = getattr(transport, method)(*args)
    if isinstance(result, AsyncResponseStream):
        return [chunk async for chunk in result]
    return await result


async def close(transport: Any) -> None:
    if isinstance(transport, AsyncOllamaTransport):
        await transport.aclose()
    else:
        transport.close()


async def outcome(flavour: str, url: str, method: str = "stream_chat", **kwargs: Any) -> Any:
    """The result of one call, or the exception it raised."""
    transport = make(flavour, url, **kwargs)
    try:
        return await run(transport, method, HELLO)
    except Exception as exc:
        return exc
    finally:
        await close(transport)


# ---------------------------------------------------------------------------------------------
# Real chunk boundaries


async def split_awkwardly(conn: Conn, body: Any) -> None:
    await conn.head()
    # a line split mid-way, a 4-byte character split after its second byte, several lines in one
    # chunk, and a last line without its newline
    cut_emoji = STREAM.index("🌍".encode()) + 2
    pieces = [STREAM[:7], STREAM[7:40], STREAM[40:cut_emoji], STREAM[cut_emoji:-1]]
    for piece in pieces:
        await conn.chunk(piece)
        await asyncio.sleep(0.005)  # encourages separate TCP segments; correctness never depends on it
    await conn.end()


async def test_chunks_arrive_whole_whatever_the_tcp_boundaries(flavour: str) -> None:
    with serve(split_awkwardly) as server:
        chunks = await outcome(flavour, server.url)
    assert [c.message.content for c in chunks] == ["Grüße", " aus", " 🌍", "!"]
    assert chunks[-1].done and chunks[-1].done_reason == "stop"
    assert aggregate_chat(chunks).message.content == "Grüße aus 🌍!"
    assert server.bodies == [{**HELLO, "stream": True}]


async def test_a_non_streamed_answer(flavour: str) -> None:
    async def answer(conn: Conn, body: Any) -> None:
        await conn.respond(200, line("Grüße aus 🌍!", done=True).strip())

    with serve(answer) as server:
        reply = await outcome(flavour, server.url, "chat")
    assert isinstance(reply, ChatResponse) and reply.message.content == "Grüße aus 🌍!"
    assert server.bodies == [{**HELLO, "stream": False}]


# ---------------------------------------------------------------------------------------------
# Streams that break


async def test_a_server_closing_mid_stream_interrupts_it(flavour: str) -> None:
    async def die(conn: Conn, body: Any) -> None:
        await conn.head()
        await conn.chunk(LINES[0] + LINES[1])
        await conn.chunk(LINES[2][:10])
        # return without the terminating chunk: the connection closes mid-body

    with serve(die) as server:
        error = await outcome(flavour, server.url)
    assert type(error) is StreamInterruptedError
    assert error.chunks_received == 2 and error.status == 200
    assert (error.instance, error.url) == ("local", server.url)


async def test_a_stream_that_ends_without_done_is_truncated(flavour: str) -> None:
    async def stop_early(conn: Conn, body: Any) -> None:
        await conn.head()
        await conn.chunk(LINES[0] + LINES[1])
        await conn.end()

    with serve(stop_early) as server:
        error = await outcome(flavour, server.url)
    assert type(error) is StreamInterruptedError and "truncated" in str(error)
    assert error.chunks_received == 2


async def test_an_error_line_after_200(flavour: str) -> None:
    async def fail_mid_stream(conn: Conn, body: Any) -> None:
        await conn.head()
        await conn.chunk(LINES[0])
        await conn.chunk(b'{"error":"an error was encountered while running the model"}\n')
        await conn.end()

    with serve(fail_mid_stream) as server:
        error = await outcome(flavour, server.url)
    assert type(error) is StreamInterruptedError
    assert error.chunks_received == 1
    assert error.ollama_message == "an error was encountered while running the model"


async def test_statuses_over_a_real_socket(flavour: str) -> None:
    async def busy(conn: Conn, body: Any) -> None:
        await conn.respond(
            503,
            b'{"error":"server busy, please try again.  maximum pending requests exceeded"}',
            Retry_After="2",
        )

    async def not_ollama(conn: Conn, body: Any) -> None:
        await conn.respond(404, b"404 page not found", "text/plain")

    with serve(busy) as server:
        error = await outcome(flavour, server.url)
    assert type(error) is InstanceBusyError and error.retry_after == 2.0 and error.status == 503
    with serve(not_ollama) as server:
        error = await outcome(flavour, server.url, "chat")
    assert type(error) is InstanceFailedError and "not an Ollama endpoint" in str(error)


# ---------------------------------------------------------------------------------------------
# Timeouts by phase


async def never_answer(conn: Conn, body: Any) -> None:
    await conn.hang()


@pytest.mark.parametrize("method", ["chat", "stream_chat"])
async def test_no_headers_in_time_is_a_first_byte_timeout(flavour: str, method: str) -> None:
    with serve(never_answer) as server:
        error = await outcome(flavour, server.url, method, timeouts=Timeouts(first_byte=0.2, idle=30.0))
        assert server.client_left.wait(10)  # the client hung up: the server's slot is free
    assert type(error) is InstanceTimeoutError and error.phase == "first_byte"
    assert error.status is None


async def test_a_stall_between_chunks_is_an_idle_timeout(flavour: str) -> None:
    async def stall(conn: Conn, body: Any) -> None:
        await conn.head()
        await conn.chunk(LINES[0])
        await conn.hang()

    with serve(stall) as server:
        error = await outcome(flavour, server.url, timeouts=Timeouts(first_byte=30.0, idle=0.2))
        assert server.client_left.wait(10)
    assert type(error) is InstanceTimeoutError and error.phase == "idle"
    assert error.status == 200 and "after 1 chunks" in str(error)


async def test_waiting_for_headers_is_bounded_by_first_byte_not_idle(flavour: str) -> None:
    async def slow_start(conn: Conn, body: Any) -> None:
        await asyncio.sleep(0.5)  # a model load: longer than idle, well within first_byte
        await conn.head()
        await conn.chunk(STREAM)
        await conn.end()

    with serve(slow_start) as server:
        chunks = await outcome(flavour, server.url, timeouts=Timeouts(first_byte=30.0, idle=0.1))
    assert not isinstance(chunks, Exception), chunks
    assert len(chunks) == 4


async def test_gaps_between_chunks_are_bounded_by_idle_not_first_byte(flavour: str) -> None:
    async def slow_tokens(conn: Conn, body: Any) -> None:
        await conn.head()
        await conn.chunk(LINES[0])
        await asyncio.sleep(0.8)  # longer than first_byte, well within idle
        await conn.chunk(b"".join(LINES[1:]))
        await conn.end()

    with serve(slow_tokens) as server:
        chunks = await outcome(flavour, server.url, timeouts=Timeouts(first_byte=0.4, idle=30.0))
    assert not isinstance(chunks, Exception), chunks
    assert len(chunks) == 4


async def test_a_total_timeout_when_one_is_set(flavour: str) -> None:
    async def endless(conn: Conn, body: Any) -> None:
        await conn.head()
        while True:
            await conn.chunk(LINES[0])
            await asyncio.sleep(0.05)

    with serve(endless) as server:
        error = await outcome(flavour, server.url, timeouts=Timeouts(total=0.5))
    assert type(error) is InstanceTimeoutError and error.phase == "total"


async def test_a_total_timeout_counts_the_wait_for_a_connection(flavour: str) -> None:
    # One connection: the second call waits ~0.8 s for it, then gets no headers. Its total of
    # 1.0 s ends it at its deadline, not a whole first_byte wait (capped once, at 1.0 s) later.
    first_arrived = threading.Event()

    async def slow_then_hang(conn: Conn, body: Any) -> None:
        if not first_arrived.is_set():
            first_arrived.set()
            await conn.head()
            await conn.chunk(LINES[0])
            await asyncio.sleep(0.8)
            await conn.chunk(b"".join(LINES[1:]))
            await conn.end()
        else:
            await conn.hang()

    with serve(slow_then_hang) as server:
        transport = make(flavour, server.url, max_connections=1)
        timeouts = Timeouts(total=1.0, first_byte=30.0)
        try:
            first = asyncio.ensure_future(run(transport, "stream_chat", HELLO))
            await asyncio.to_thread(first_arrived.wait, 10)
            started = time.monotonic()
            with pytest.raises(InstanceTimeoutError) as info:
                if isinstance(transport, OllamaTransport):
                    await asyncio.to_thread(transport.chat, HELLO, timeouts=timeouts)
                else:
                    await transport.chat(HELLO, timeouts=timeouts)
            elapsed = time.monotonic() - started
            assert len(await first) == 4
        finally:
            await close(transport)
    assert info.value.phase == "total"
    assert elapsed < 1.4, f"total=1.0 but the call took {elapsed:.2f} s"


async def test_a_closed_port_is_an_instance_failure(flavour: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await outcome(flavour, f"http://127.0.0.1:{port}", "chat")
    assert type(error) is InstanceFailedError
    assert error.status is None and error.url == f"http://127.0.0.1:{port}"
    assert "cannot connect" in str(error)


# ---------------------------------------------------------------------------------------------
# Leaving early frees the server's slot


async def stream_then_wait(conn: Conn, body: Any) -> None:
    await conn.head()
    await conn.chunk(LINES[0])
    await conn.until_client_leaves()


async def test_closing_a_stream_early_disconnects() -> None:
    with serve(stream_then_wait) as server:
        async with AsyncOllamaTransport(server.url) as transport:
            async with transport.stream_chat(HELLO) as stream:
                async for chunk in stream:
                    assert chunk.message.content == "Grüße"
                    break
            assert await asyncio.to_thread(server.client_left.wait, 10)


async def test_cancelling_a_stream_disconnects() -> None:
    with serve(stream_then_wait) as server:
        async with AsyncOllamaTransport(server.url) as transport:
            got_first = asyncio.Event()

            async def consume() -> None:
                async for _ in transport.stream_chat(HELLO):
                    got_first.set()

            task = asyncio.create_task(consume())
            await got_first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(server.client_left.wait, 10)


def test_breaking_out_of_a_sync_stream_disconnects() -> None:
    with serve(stream_then_wait) as server, OllamaTransport(server.url) as transport:
        for _ in transport.stream_chat(HELLO):
            break
        assert server.client_left.wait(10)
