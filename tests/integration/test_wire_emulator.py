"""The transports against OllamaEmulator: every endpoint, and every fault the emulator can show,
arrive as the typed responses and the errors the rest of the pool relies on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gleitzeit_llm.errors import (
    InstanceBusyError,
    InstanceFailedError,
    InstanceTimeoutError,
    ModelNotFoundError,
    RequestError,
    StreamInterruptedError,
)
from gleitzeit_llm.ollama import (
    AsyncOllamaTransport,
    AsyncResponseStream,
    OllamaTransport,
    ResponseStream,
    Timeouts,
    aggregate_chat,
    aggregate_generate,
)
from gleitzeit_llm.testing import BUSY_MESSAGE, OllamaEmulator

HELLO = {"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue?"}]}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[OllamaEmulator]:
    with OllamaEmulator(models=["llama3.2", "qwen3", "nomic-embed-text"], time_scale=0.0) as emu:
        yield emu


@pytest.fixture
def emu(emulator: OllamaEmulator) -> Iterator[OllamaEmulator]:
    emulator.clear_faults()
    emulator.clear_tool_calls()
    yield emulator
    emulator.clear_faults()
    emulator.clear_tool_calls()


@pytest.fixture(params=["async", "sync"])
def flavour(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def transport(flavour: str, emu: OllamaEmulator) -> AsyncIterator[Any]:
    if flavour == "async":
        async with AsyncOllamaTransport(emu.url, instance_id="emu") as client:
            yield client
    else:
        with OllamaTransport(emu.url, instance_id="emu") as client:
            yield client


async def run(transport: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``method`` on either flavour (sync calls in a thread); streams are read to the end."""
    if isinstance(transport, OllamaTransport):

        def call() -> Any:
            result = getattr(transport, method)(*args, **kwargs)
            return list(result) if isinstance(result, ResponseStream) else result

        return await asyncio.to_thread(call)
    result = getattr(transport, method)(*args, **kwargs)
    if isinstance(result, AsyncResponseStream):
        return [chunk async for chunk in result]
    return await result


# ---------------------------------------------------------------------------------------------
# Endpoints


async def test_probes(transport: Any) -> None:
    assert await run(transport, "ping") is True
    assert (await run(transport, "version")).version
    tags = await run(transport, "tags")
    assert tags.has_model("llama3.2") and tags.has_model("nomic-embed-text:latest")
    assert not tags.has_model("llama9")
    show = await run(transport, "show", "llama3.2")
    assert show.capabilities and "completion" in show.capabilities


async def test_a_chat_loads_the_model_into_ps(transport: Any) -> None:
    answer = await run(transport, "chat", HELLO)
    assert answer.done and answer.message.content and answer.model == "llama3.2"
    assert answer.eval_count and answer.queue_time is not None and answer.queue_time >= 0
    ps = await run(transport, "ps")
    assert ps.has_model("llama3.2")


async def test_a_folded_stream_says_what_the_non_streamed_answer_says(transport: Any) -> None:
    chunks = await run(transport, "stream_chat", HELLO)
    answer = await run(transport, "chat", HELLO)
    folded = aggregate_chat(chunks)
    assert len(chunks) > 2 and chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert folded.message.content == answer.message.content
    assert (folded.done_reason, folded.eval_count) == (answer.done_reason, answer.eval_count)


async def test_thinking_streams_and_folds(transport: Any) -> None:
    request = {"model": "qwen3", "messages": [{"role": "user", "content": "hi"}], "think": True}
    folded = aggregate_chat(await run(transport, "stream_chat", request))
    answer = await run(transport, "chat", request)
    assert folded.message.thinking and folded.message.thinking == answer.message.thinking
    assert folded.message.content == answer.message.content


async def test_generate_streams_and_folds(transport: Any) -> None:
    request = {"model": "llama3.2", "prompt": "why is the sky blue?", "options": {"seed": 1}}
    folded = aggregate_generate(await run(transport, "stream_generate", request))
    answer = await run(transport, "generate", request)
    assert folded.response and folded.response == answer.response


async def test_tool_calls(transport: Any, emu: OllamaEmulator) -> None:
    request = {**HELLO, "tools": [WEATHER_TOOL]}
    emu.script_tool_calls([{"name": "get_weather", "arguments": {"city": "Tokyo"}}])
    emu.script_tool_calls([{"name": "get_weather", "arguments": {"city": "Tokyo"}}])
    answer = await run(transport, "chat", request)
    folded = aggregate_chat(await run(transport, "stream_chat", request))
    for message in (answer.message, folded.message):
        assert message.tool_calls is not None
        (call,) = message.tool_calls
        assert (call.function.name, call.function.arguments) == ("get_weather", {"city": "Tokyo"})


async def test_embed(transport: Any) -> None:
    answer = await run(transport, "embed", {"model": "nomic-embed-text", "input": ["a", "b"]})
    assert len(answer.embeddings) == 2 and len(answer.embeddings[0]) > 0


# ---------------------------------------------------------------------------------------------
# Errors


async def test_a_missing_model(transport: Any) -> None:
    for method in ("chat", "stream_chat"):
        with pytest.raises(ModelNotFoundError) as info:
            await run(transport, method, {**HELLO, "model": "llama9"})
        error = info.value
        assert (error.model, error.status, error.instance) == ("llama9", 404, "emu")
        assert str(error).endswith("model 'llama9' not found (HTTP 404)")


async def test_a_request_the_server_rejects(transport: Any) -> None:
    with pytest.raises(RequestError) as info:
        await run(transport, "chat", {**HELLO, "think": True})
    assert info.value.status == 400 and info.value.ollama_message


async def test_busy(transport: Any, emu: OllamaEmulator) -> None:
    emu.set_faults(busy=True)
    with pytest.raises(InstanceBusyError) as info:
        await run(transport, "stream_chat", HELLO)
    assert info.value.status == 503 and info.value.ollama_message == BUSY_MESSAGE


async def test_a_runner_crash(transport: Any, emu: OllamaEmulator) -> None:
    emu.set_faults(
        fail_next=1, error_status=500, error_message="llama-server process has terminated: exit status 2"
    )
    with pytest.raises(InstanceFailedError) as info:
        await run(transport, "chat", HELLO)
    assert type(info.value) is InstanceFailedError and info.value.status == 500
    assert info.value.ollama_message == "llama-server process has terminated: exit status 2"


async def test_an_error_line_mid_stream(transport: Any, emu: OllamaEmulator) -> None:
    emu.set_faults(error_after_chunks=2)
    with pytest.raises(StreamInterruptedError) as info:
        await run(transport, "stream_chat", HELLO)
    assert info.value.chunks_received == 2
    assert info.value.ollama_message == "an error was encountered while running the model"


async def test_a_dropped_connection_mid_stream(transport: Any, emu: OllamaEmulator) -> None:
    emu.set_faults(drop_after_chunks=2)
    with pytest.raises(StreamInterruptedError) as info:
        await run(transport, "stream_chat", HELLO)
    assert info.value.chunks_received == 2 and info.value.status == 200


async def test_a_hang_before_headers_is_a_first_byte_timeout(transport: Any, emu: OllamaEmulator) -> None:
    emu.set_faults(hang=True)
    with pytest.raises(InstanceTimeoutError) as info:
        await run(transport, "chat", HELLO, timeouts=Timeouts(first_byte=0.2))
    assert info.value.phase == "first_byte"


async def test_a_hang_mid_stream_is_an_idle_timeout(transport: Any, emu: OllamaEmulator) -> None:
    emu.set_faults(hang_after_chunks=1)
    with pytest.raises(InstanceTimeoutError) as info:
        await run(transport, "stream_chat", HELLO, timeouts=Timeouts(idle=0.2))
    assert info.value.phase == "idle"


async def test_a_stopped_server_refuses(flavour: str) -> None:
    emu = OllamaEmulator(models=["llama3.2"], time_scale=0.0)
    await asyncio.to_thread(emu.start)
    try:
        await asyncio.to_thread(emu.stop)
        cls = AsyncOllamaTransport if flavour == "async" else OllamaTransport
        client = cls(emu.url, instance_id="emu")
        with pytest.raises(InstanceFailedError) as info:
            await run(client, "ping")
        assert type(info.value) is InstanceFailedError and info.value.status is None
        if isinstance(client, AsyncOllamaTransport):
            await client.aclose()
        else:
            client.close()
    finally:
        await asyncio.to_thread(emu.close)


async def test_credentials_in_the_url_stay_out_of_errors(emu: OllamaEmulator) -> None:
    url = emu.url.replace("http://", "http://alice:s3cret@")
    async with AsyncOllamaTransport(url) as client:
        with pytest.raises(ModelNotFoundError) as info:
            await client.chat({**HELLO, "model": "llama9"})
    assert "s3cret" not in str(info.value) and info.value.url == emu.url
    assert emu.requests[-1].path == "/api/chat"


# ---------------------------------------------------------------------------------------------
# Leaving a stream early frees the server's slot


@pytest.fixture
async def slow_emulator() -> AsyncIterator[OllamaEmulator]:
    # 400 tokens at 20 tokens/s: still generating when the client leaves.
    async with OllamaEmulator(
        models=["llama3.2"], loaded=["llama3.2"], reply_tokens=400, tokens_per_second=20.0, ttft=0.0
    ) as emu:
        yield emu


async def test_closing_a_stream_early_frees_the_slot(slow_emulator: OllamaEmulator) -> None:
    emu = slow_emulator
    async with AsyncOllamaTransport(emu.url) as client:
        async with client.stream_chat(HELLO) as stream:
            await stream.__anext__()
            assert emu.in_flight("llama3.2") == 1
        await emu.wait_for_async(lambda: emu.in_flight("llama3.2") == 0, timeout=10)


async def test_cancelling_a_stream_frees_the_slot(slow_emulator: OllamaEmulator) -> None:
    emu = slow_emulator
    async with AsyncOllamaTransport(emu.url) as client:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in client.stream_chat(HELLO):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await emu.wait_for_async(lambda: emu.in_flight("llama3.2") == 0, timeout=10)


def test_breaking_out_of_a_sync_stream_frees_the_slot() -> None:
    with (
        OllamaEmulator(
            models=["llama3.2"], loaded=["llama3.2"], reply_tokens=400, tokens_per_second=20.0
        ) as emu,
        OllamaTransport(emu.url) as client,
    ):
        for _ in client.stream_chat(HELLO):
            break
        emu.wait_for(lambda: emu.in_flight("llama3.2") == 0, timeout=10)
