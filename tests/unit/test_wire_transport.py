"""The transports: each method speaks the right endpoint, caller mistakes never reach the network,
streams free their connection when the caller stops early, and timeouts are set per phase."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from gleitzeit_llm.errors import ConfigError, InstanceFailedError, RequestError, StreamInterruptedError
from gleitzeit_llm.ollama import (
    AsyncOllamaTransport,
    AsyncResponseStream,
    ChatRequest,
    ChatResponse,
    EmbedResponse,
    GenerateResponse,
    ListResponse,
    OllamaTransport,
    ProcessResponse,
    ResponseStream,
    ShowResponse,
    Timeouts,
    VersionResponse,
    aggregate_chat,
    aggregate_generate,
)

URL = "http://gpu1:11434"
HELLO = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
PIECES = ["Hello", "!", " How", " are", " you", " today", "?"]
METRICS = {
    "total_duration": 5191566416,
    "load_duration": 2154458,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 383809000,
    "eval_count": 298,
    "eval_duration": 4799921000,
}
FINAL_CHAT = {
    "model": "llama3.2",
    "created_at": "2023-12-12T14:13:43.416799Z",
    "message": {"role": "assistant", "content": "Hello! How are you today?"},
    "done": True,
    "done_reason": "stop",
    **METRICS,
}


def chat_lines() -> list[bytes]:
    lines = [
        {
            "model": "llama3.2",
            "created_at": "t",
            "message": {"role": "assistant", "content": p},
            "done": False,
        }
        for p in PIECES
    ]
    lines.append({**FINAL_CHAT, "message": {"role": "assistant", "content": ""}})
    return [json.dumps(line).encode() + b"\n" for line in lines]


def generate_lines() -> list[bytes]:
    lines = [{"model": "llama3.2", "created_at": "t", "response": p, "done": False} for p in PIECES]
    lines.append(
        {"model": "llama3.2", "created_at": "t", "response": "", "done": True, "context": [1], **METRICS}
    )
    return [json.dumps(line).encode() + b"\n" for line in lines]


class ChatServer:
    """A fake Ollama answering chat and generate, streamed or not; remembers requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        if request.url.path.endswith("/api/chat"):
            if body["stream"]:
                return httpx.Response(200, content=b"".join(chat_lines()))
            return httpx.Response(200, json=FINAL_CHAT)
        if body["stream"]:
            return httpx.Response(200, content=b"".join(generate_lines()))
        return httpx.Response(
            200,
            json={
                "model": "llama3.2",
                "response": "".join(PIECES),
                "done": True,
                "context": [1],
                "created_at": "t",
                **METRICS,
            },
        )


def make(flavour: str, handler: Any, **kwargs: Any) -> Any:
    cls = AsyncOllamaTransport if flavour == "async" else OllamaTransport
    return cls(URL, instance_id="gpu-1", transport=httpx.MockTransport(handler), **kwargs)


async def run(transport: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    result = getattr(transport, method)(*args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    if isinstance(result, AsyncResponseStream):
        return [chunk async for chunk in result]
    if isinstance(result, ResponseStream):
        return list(result)
    return result


async def close(transport: Any) -> None:
    if isinstance(transport, AsyncOllamaTransport):
        await transport.aclose()
    else:
        transport.close()


@pytest.fixture(params=["async", "sync"])
def flavour(request: pytest.FixtureRequest) -> str:
    return request.param


# ---------------------------------------------------------------------------------------------
# Endpoints


async def test_chat_sends_stream_false_and_returns_the_answer(flavour: str) -> None:
    server = ChatServer()
    transport = make(flavour, server)
    answer = await run(transport, "chat", HELLO)
    await close(transport)
    assert isinstance(answer, ChatResponse) and answer.message.content == "Hello! How are you today?"
    (request,) = server.requests
    assert (request.method, request.url.path) == ("POST", "/api/chat")
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {**HELLO, "stream": False}


async def test_stream_chat_yields_every_chunk_and_folds_into_the_non_streamed_answer(flavour: str) -> None:
    server = ChatServer()
    transport = make(flavour, server)
    chunks = await run(transport, "stream_chat", ChatRequest(**HELLO))
    answer = await run(transport, "chat", ChatRequest(**HELLO))
    await close(transport)
    assert [c.message.content for c in chunks] == [*PIECES, ""]
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert json.loads(server.requests[0].content)["stream"] is True
    assert aggregate_chat(chunks) == answer


async def test_generate_and_stream_generate(flavour: str) -> None:
    transport = make(flavour, ChatServer())
    chunks = await run(transport, "stream_generate", {"model": "llama3.2", "prompt": "hi"})
    answer = await run(transport, "generate", {"model": "llama3.2", "prompt": "hi"})
    await close(transport)
    assert all(isinstance(c, GenerateResponse) for c in chunks)
    assert aggregate_generate(chunks) == answer
    assert answer.response == "Hello! How are you today?" and answer.tokens_per_second is not None


async def test_embed_tags_ps_version_show(flavour: str) -> None:
    router = respx.Router(base_url=URL)
    embed = router.post("/api/embed").mock(
        return_value=httpx.Response(200, json={"model": "all-minilm", "embeddings": [[0.1, 0.2], [0.3, 0.4]]})
    )
    router.get("/api/tags").mock(
        return_value=httpx.Response(
            200, json={"models": [{"name": "all-minilm:latest", "model": "all-minilm:latest"}]}
        )
    )
    router.get("/api/ps").mock(return_value=httpx.Response(200, json={"models": []}))
    router.get("/api/version").mock(return_value=httpx.Response(200, json={"version": "0.33.0"}))
    show = router.post("/api/show").mock(
        return_value=httpx.Response(200, json={"capabilities": ["embedding"]})
    )
    transport = make(flavour, router.handler)
    try:
        embedded = await run(transport, "embed", {"model": "all-minilm", "input": ["a", "b"]})
        tags = await run(transport, "tags")
        ps = await run(transport, "ps")
        version = await run(transport, "version")
        shown = await run(transport, "show", "all-minilm", verbose=True)
    finally:
        await close(transport)
    assert isinstance(embedded, EmbedResponse) and embedded.embeddings == [[0.1, 0.2], [0.3, 0.4]]
    assert json.loads(embed.calls.last.request.content) == {"model": "all-minilm", "input": ["a", "b"]}
    assert isinstance(tags, ListResponse) and tags.has_model("all-minilm")
    assert isinstance(ps, ProcessResponse) and ps.models == []
    assert isinstance(version, VersionResponse) and version.version == "0.33.0"
    assert isinstance(shown, ShowResponse) and shown.capabilities == ["embedding"]
    assert json.loads(show.calls.last.request.content) == {"model": "all-minilm", "verbose": True}


async def test_ping(flavour: str) -> None:
    router = respx.Router(base_url=URL)
    router.get("/").mock(return_value=httpx.Response(200, text="Ollama is running"))
    transport = make(flavour, router.handler)
    assert await run(transport, "ping") is True
    await close(transport)


async def test_ping_of_something_else_raises(flavour: str) -> None:
    router = respx.Router(base_url=URL)
    router.get("/").mock(
        return_value=httpx.Response(200, text="<h1>It works!</h1>", headers={"Content-Type": "text/html"})
    )
    transport = make(flavour, router.handler)
    with pytest.raises(InstanceFailedError, match="does not look like Ollama"):
        await run(transport, "ping")
    await close(transport)


async def test_a_url_with_a_path_prefix_is_kept(flavour: str) -> None:
    server = ChatServer()
    cls = AsyncOllamaTransport if flavour == "async" else OllamaTransport
    transport = cls("https://proxy.example/ollama/", transport=httpx.MockTransport(server))
    await run(transport, "chat", HELLO)
    await close(transport)
    assert str(server.requests[0].url) == "https://proxy.example/ollama/api/chat"
    assert transport.instance_id == "proxy.example"


@pytest.mark.parametrize(
    ("url", "base", "instance_id"),
    [
        ("gpu1", "http://gpu1:11434", "gpu1:11434"),
        ("gpu1:8080", "http://gpu1:8080", "gpu1:8080"),
        ("http://gpu1", "http://gpu1", "gpu1"),
        ("https://gpu1:443/", "https://gpu1:443", "gpu1:443"),
        ("[::1]:11434", "http://[::1]:11434", "[::1]:11434"),
    ],
)
def test_urls_are_read_like_ollama_host(url: str, base: str, instance_id: str) -> None:
    with OllamaTransport(url) as transport:
        assert (transport.url, transport.instance_id) == (base, instance_id)
        assert repr(transport) == f"OllamaTransport(instance_id={instance_id!r}, url={base!r})"


def test_transports_are_context_managers() -> None:
    with OllamaTransport(URL, transport=httpx.MockTransport(ChatServer())) as transport:
        assert transport.chat(HELLO).done


async def test_async_transports_are_context_managers() -> None:
    async with AsyncOllamaTransport(URL, transport=httpx.MockTransport(ChatServer())) as transport:
        assert (await transport.chat(HELLO)).done


def test_the_user_agent_names_the_library() -> None:
    server = ChatServer()
    with OllamaTransport(URL, transport=httpx.MockTransport(server), headers={"X-Team": "ml"}) as transport:
        transport.chat(HELLO)
    headers = server.requests[0].headers
    assert headers["User-Agent"].startswith("gleitzeit-llm/")
    assert headers["X-Team"] == "ml"


# ---------------------------------------------------------------------------------------------
# Validation comes before any network I/O


@pytest.mark.parametrize("method", ["chat", "stream_chat", "generate", "stream_generate", "embed"])
@pytest.mark.parametrize(
    "request_", [{"model": ""}, {"model": "m", "messages": "hi"}, {"model": "m", "num_ctx": 4}, "m"]
)
async def test_invalid_requests_fail_before_any_network_io(flavour: str, method: str, request_: Any) -> None:
    server = ChatServer()
    transport = make(flavour, server)
    with pytest.raises(RequestError):
        await run(transport, method, request_)
    await close(transport)
    assert server.requests == []


async def test_show_with_an_empty_model_fails_before_any_network_io(flavour: str) -> None:
    server = ChatServer()
    transport = make(flavour, server)
    with pytest.raises(RequestError):
        await run(transport, "show", "")
    await close(transport)
    assert server.requests == []


@pytest.mark.parametrize("options", [{"temperature": float("nan")}, {"stop": {"a", "b"}}])
async def test_options_json_cannot_carry_are_request_errors(flavour: str, options: dict) -> None:
    server = ChatServer()
    transport = make(flavour, server)
    with pytest.raises(RequestError, match="cannot be sent as JSON"):
        await run(transport, "chat", {**HELLO, "options": options})
    await close(transport)
    assert server.requests == []


@pytest.mark.parametrize("method", ["stream_chat", "stream_generate"])
async def test_an_invalid_stream_request_fails_on_the_call_itself(flavour: str, method: str) -> None:
    transport = make(flavour, ChatServer())
    with pytest.raises(RequestError):
        getattr(transport, method)({"model": ""})
    await close(transport)


def test_a_stream_is_sent_on_first_iteration_only() -> None:
    server = ChatServer()
    with OllamaTransport(URL, transport=httpx.MockTransport(server)) as transport:
        stream = transport.stream_chat(HELLO)
        assert server.requests == []
        next(stream)
        assert len(server.requests) == 1
        stream.close()


# ---------------------------------------------------------------------------------------------
# Streams free their connection when the caller stops early


class TrackedBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed body that records whether it was closed; ``hang`` blocks after the first chunk."""

    def __init__(self, chunks: list[bytes], hang: asyncio.Event | None = None) -> None:
        self.chunks = chunks
        self.hang = hang
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            yield chunk
            if i == 0 and self.hang is not None:
                await self.hang.wait()

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def tracked(hang: asyncio.Event | None = None) -> tuple[TrackedBody, Any]:
    body = TrackedBody(chat_lines(), hang)
    return body, lambda request: httpx.Response(200, stream=body)


async def test_async_with_closes_the_response_on_early_exit() -> None:
    body, handler = tracked()
    async with AsyncOllamaTransport(URL, transport=httpx.MockTransport(handler)) as transport:
        async with transport.stream_chat(HELLO) as stream:
            async for chunk in stream:
                assert chunk.message.content == "Hello"
                break
        assert body.closed


async def test_aclose_closes_the_response() -> None:
    body, handler = tracked()
    async with AsyncOllamaTransport(URL, transport=httpx.MockTransport(handler)) as transport:
        stream = transport.stream_chat(HELLO)
        await stream.__anext__()
        assert not body.closed
        await stream.aclose()
        assert body.closed


async def test_an_exception_in_the_consumer_closes_the_response() -> None:
    body, handler = tracked()
    async with AsyncOllamaTransport(URL, transport=httpx.MockTransport(handler)) as transport:
        with pytest.raises(KeyError):
            async with transport.stream_chat(HELLO) as stream:
                async for _ in stream:
                    raise KeyError("consumer failed")
        assert body.closed


async def test_cancelling_the_consuming_task_closes_the_response() -> None:
    hang = asyncio.Event()
    body, handler = tracked(hang)
    first_chunk = asyncio.Event()

    async def consume(transport: AsyncOllamaTransport) -> None:
        async for _ in transport.stream_chat(HELLO):
            first_chunk.set()

    async with AsyncOllamaTransport(URL, transport=httpx.MockTransport(handler)) as transport:
        task = asyncio.create_task(consume(transport))
        await first_chunk.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert body.closed


async def test_breaking_out_of_a_plain_async_for_closes_the_response() -> None:
    body, handler = tracked()
    async with AsyncOllamaTransport(URL, transport=httpx.MockTransport(handler)) as transport:
        async for _ in transport.stream_chat(HELLO):
            break
        # The abandoned generator is finalised by asyncio's async-generator hook in a new task.
        for _ in range(10):
            gc.collect()
            await asyncio.sleep(0)
            if body.closed:
                break
        assert body.closed


def test_breaking_out_of_a_sync_stream_closes_the_response() -> None:
    body, handler = tracked()
    with OllamaTransport(URL, transport=httpx.MockTransport(handler)) as transport:
        for _ in transport.stream_chat(HELLO):
            break
        assert body.closed
        with transport.stream_chat(HELLO) as stream:
            next(stream)
        assert body.closed


async def test_a_finished_stream_is_closed(flavour: str) -> None:
    body, handler = tracked()
    transport = make(flavour, handler)
    chunks = await run(transport, "stream_chat", HELLO)
    await close(transport)
    assert len(chunks) == len(PIECES) + 1 and body.closed


# ---------------------------------------------------------------------------------------------
# Timeouts by phase


def test_timeouts_are_validated() -> None:
    for bad in ({"connect": 0}, {"idle": -1}, {"first_byte": True}, {"total": "60"}):
        with pytest.raises(ConfigError):
            Timeouts(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        OllamaTransport(URL, timeouts=30)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        OllamaTransport(URL, max_connections=0)


async def test_headers_wait_for_first_byte_then_the_body_for_idle(flavour: str) -> None:
    server = ChatServer()
    transport = make(flavour, server, timeouts=Timeouts(connect=2.0, first_byte=60.0, idle=9.0))
    await run(transport, "stream_chat", HELLO)
    await close(transport)
    # httpcore read "read" when waiting for headers (first_byte) and again when the body began (idle).
    timeout = server.requests[0].extensions["timeout"]
    assert (timeout["connect"], timeout["write"], timeout["pool"]) == (2.0, 60.0, 60.0)
    assert timeout["read"] == 9.0


async def test_timeouts_can_be_overridden_per_call(flavour: str) -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions["timeout"]))
        return httpx.Response(200, json={"version": "0.5.1"})

    transport = make(flavour, handler)
    await run(transport, "version", timeouts=Timeouts(connect=1.0, first_byte=2.0, idle=3.0))
    await run(transport, "version")
    await close(transport)
    assert seen == [
        {"connect": 1.0, "read": 2.0, "write": 2.0, "pool": 2.0},
        {"connect": 5.0, "read": 300.0, "write": 300.0, "pool": 300.0},
    ]


async def test_no_total_timeout_by_default_and_a_total_caps_every_wait(flavour: str) -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions["timeout"]))
        return httpx.Response(200, json={"version": "0.5.1"})

    transport = make(flavour, handler, timeouts=Timeouts(total=1.5))
    await run(transport, "version")
    await close(transport)
    assert all(0 < value <= 1.5 for value in seen[0].values())
    assert Timeouts().total is None


# ---------------------------------------------------------------------------------------------
# collect_chat / collect_generate: streamed on the wire, folded, validated once


async def test_collect_chat_streams_on_the_wire_and_equals_the_folded_stream(flavour: str) -> None:
    server = ChatServer()
    transport = make(flavour, server)
    firsts: list[int] = []
    answer = await run(transport, "collect_chat", HELLO, on_first=lambda: firsts.append(1))
    chunks = await run(transport, "stream_chat", HELLO)
    await close(transport)
    assert json.loads(server.requests[0].content)["stream"] is True
    assert answer == aggregate_chat(chunks)
    assert answer.message.content == "Hello! How are you today?" and answer.eval_count == 298
    assert firsts == [1]  # once, at the first chunk


async def test_collect_generate_equals_the_folded_stream(flavour: str) -> None:
    transport = make(flavour, ChatServer())
    body = {"model": "llama3.2", "prompt": "hi"}
    answer = await run(transport, "collect_generate", body)
    chunks = await run(transport, "stream_generate", body)
    await close(transport)
    assert answer == aggregate_generate(chunks) and answer.context == [1]


def _lines(*objs: Any) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "truncated after 0 chunks"),
        (
            _lines(
                {"model": "m", "message": {"role": "assistant", "content": "a"}, "done": False},
                {"error": "model runner crashed"},
            ),
            "model runner crashed",
        ),
        (
            _lines({"model": "m", "message": {"role": "assistant", "content": 7}, "done": True}),
            "chunk 1 of /api/chat is not an Ollama chunk",
        ),
        (_lines({"model": "m", "message": "hello", "done": True}), "chunk 1 of /api/chat"),
    ],
    ids=["empty", "error-line", "bad-content", "bad-message"],
)
async def test_collect_chat_names_a_broken_stream(flavour: str, body: bytes, expected: str) -> None:
    transport = make(flavour, lambda request: httpx.Response(200, content=body))
    with pytest.raises(StreamInterruptedError, match=expected) as info:
        await run(transport, "collect_chat", HELLO)
    await close(transport)
    assert info.value.instance == "gpu-1"


def test_idle_connections_are_not_kept_for_long() -> None:
    # httpcore's per-request pool scan grows with idle connections: measured ~5 ms per call
    # with 64 idle ones kept 30 s after a burst (docs/performance.md). Keep httpx's 5 s.
    transport = OllamaTransport(URL, instance_id="gpu-1")
    try:
        pool = transport._client._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry <= 5.0
    finally:
        transport.close()
