"""``OllamaPool`` against emulated Ollama servers: every method, kwargs, thinking, metadata, failover."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ThinkingBlock
from llama_index.llms.ollama import Ollama

from gleitzeit_llm import AllInstancesFailedError, OllamaPoolProvider, RequestError
from gleitzeit_llm.testing import OllamaEmulator
from llama_index.llms.gleitzeit import OllamaPool

HELLO = [ChatMessage(role="user", content="Hello!")]
# Every key an Ollama /api/chat body may carry: a routing hint must never be among them.
CHAT_FIELDS = {"model", "messages", "tools", "format", "options", "stream", "keep_alive", "think"}


def echo(request: Any) -> str:
    return f"echo: {request.prompt}"


def chats(emulators: list[OllamaEmulator]) -> list[Any]:
    return [r for emu in emulators for r in emu.requests_for("/api/chat")]


async def collect(agen: Any) -> list[Any]:
    return [item async for item in agen]


# -- construction -----------------------------------------------------------------------------


def test_accepts_every_field_of_ollama() -> None:
    missing = set(Ollama.model_fields) - set(OllamaPool.model_fields)
    assert not missing, f"OllamaPool lacks Ollama's fields {missing}"


def test_one_source_of_instances(pool: Callable[..., Any]) -> None:
    _, instances = pool(1)
    with pytest.raises(ValueError, match="instances=, config=, pool= or base_url="):
        OllamaPool(model="llama3.2", instances=instances, base_url=instances[0]["url"])
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        OllamaPool(model="llama3.2", instances=instances, no_such_field=1)


def test_shares_a_pool_and_base_url_is_a_pool_of_one(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(1)
    shared = OllamaPoolProvider(instances=instances)
    try:
        a, b = make_llm(pool=shared), make_llm(pool=shared, model="qwen3")
        assert a.provider is b.provider is shared
        a.close()  # a shared pool is not closed by its users
        assert b.chat(HELLO).message.content
    finally:
        shared.close_sync()
    single = make_llm(base_url=emulators[0].url)
    assert [i.url for i in single.provider.manager.instances] == [emulators[0].url]


def test_request_timeout_and_headers_configure_the_pool(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(1)
    llm = make_llm(instances=instances, request_timeout=12.5, headers={"X-Team": "search"})
    timeouts = llm.provider.config.timeouts
    assert (timeouts.first_byte, timeouts.idle) == (12.5, 12.5)
    llm.chat(HELLO)
    assert emulators[0].requests_for("/api/chat")[-1].headers.get("x-team") == "search"
    with pytest.raises(ValueError, match="a shared pool= keeps its own"):
        OllamaPool(model="llama3.2", pool=llm.provider, request_timeout=3)


# -- metadata ---------------------------------------------------------------------------------


def test_metadata_asks_show_once_per_model_and_pool(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2)
    llm = make_llm(instances=instances)
    assert llm.metadata.context_window == 131072 and llm.metadata.is_function_calling_model
    for _ in range(3):
        llm.chat(HELLO)
        assert llm.metadata.model_name == "llama3.2"
    other = make_llm(pool=llm.provider, model="llama3.2")
    other.complete("hi")
    asyncio.run(other.achat(HELLO))
    shows = [r for emu in emulators for r in emu.requests_for("/api/show")]
    assert len(shows) == 1
    assert {r.options["num_ctx"] for r in chats(emulators)} == {131072}  # as Ollama's LLM sends it
    llm.chat(HELLO, model="qwen3")  # another model: its own /api/show, its own num_ctx
    assert len([r for emu in emulators for r in emu.requests_for("/api/show")]) == 2
    assert [r.options["num_ctx"] for r in chats(emulators) if r.model == "qwen3"] == [40960]


def test_explicit_context_window_needs_no_show(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(1)
    llm = make_llm(instances=instances, context_window=2048)
    assert llm.metadata.context_window == 2048
    llm.chat(HELLO)
    assert emulators[0].requests_for("/api/show") == []
    assert emulators[0].requests_for("/api/chat")[0].options["num_ctx"] == 2048


# -- every method -----------------------------------------------------------------------------


def _sync_calls(llm: OllamaPool, **kw: Any) -> list[tuple[str, str, Any]]:
    chat = llm.chat(HELLO, **kw)
    complete = llm.complete("Hello!", **kw)
    streamed = list(llm.stream_chat(HELLO, **kw))
    streamed_completion = list(llm.stream_complete("Hello!", **kw))
    return [
        ("chat", chat.message.content or "", chat.raw),
        ("complete", complete.text, complete.raw),
        ("stream_chat", "".join(r.delta or "" for r in streamed), streamed[-1].raw),
        ("stream_complete", "".join(r.delta or "" for r in streamed_completion), streamed_completion[-1].raw),
    ]


async def _async_calls(llm: OllamaPool, **kw: Any) -> list[tuple[str, str, Any]]:
    chat = await llm.achat(HELLO, **kw)
    complete = await llm.acomplete("Hello!", **kw)
    streamed = await collect(await llm.astream_chat(HELLO, **kw))
    streamed_completion = await collect(await llm.astream_complete("Hello!", **kw))
    return [
        ("achat", chat.message.content or "", chat.raw),
        ("acomplete", complete.text, complete.raw),
        ("astream_chat", "".join(r.delta or "" for r in streamed), streamed[-1].raw),
        (
            "astream_complete",
            "".join(r.delta or "" for r in streamed_completion),
            streamed_completion[-1].raw,
        ),
    ]


def _check_calls(results: list[tuple[str, str, Any]], emulators: list[OllamaEmulator], model: str) -> None:
    for name, text, raw in results:
        assert text == "echo: Hello!", name
        assert raw["pool"]["instance_id"] == "e1", name  # the gpu-tagged instance
        assert raw["pool"]["attempts"] == 1 and raw["pool"]["requested_model"] == model, name
        assert raw["usage"]["completion_tokens"] == raw["eval_count"] > 0, name
    assert emulators[0].requests_for("/api/chat") == []
    records = emulators[1].requests_for("/api/chat")
    assert len(records) == 4 and {r.model for r in records} == {model}
    assert all(set(r.body) <= CHAT_FIELDS for r in records)


def test_sync_methods_with_model_and_hints_per_call(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, tags=[["cpu"], ["gpu"]], responder=echo)
    llm = make_llm(instances=instances)
    _check_calls(_sync_calls(llm, model="qwen3", instance_tags=["gpu"], think=False), emulators, "qwen3")


async def test_async_methods_with_model_and_hints_per_call(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, tags=[["cpu"], ["gpu"]], responder=echo)
    llm = make_llm(instances=instances)
    results = await _async_calls(llm, model="qwen3", instance_tags=["gpu"], think=False)
    _check_calls(results, emulators, "qwen3")


def test_streams_are_cumulative_and_carry_the_pool(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    _, instances = pool(1, responder=echo)
    chunks = list(make_llm(instances=instances).stream_chat(HELLO))
    assert len(chunks) > 2
    assert [c.message.content for c in chunks][-1] == "echo: Hello!"
    assert all(c.raw["pool"]["instance_id"] == "e0" for c in chunks)
    assert chunks[-1].raw["done"] is True and "usage" in chunks[-1].raw


def test_leaving_a_stream_early_frees_the_slot(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    _, instances = pool(1, reply_tokens=50)
    llm = make_llm(instances=instances)
    stream = llm.stream_chat(HELLO)
    next(stream)
    assert llm.provider.status()["active_requests"] == 1
    stream.close()
    assert llm.provider.status()["active_requests"] == 0


# -- call arguments ---------------------------------------------------------------------------


def test_options_request_fields_and_hints_go_where_they_belong(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, tags=[["cpu"], ["gpu"]])
    llm = make_llm(instances=instances, temperature=0.2, additional_kwargs={"seed": 7}, keep_alive="10m")
    llm.chat(HELLO, num_predict=5, options={"top_k": 3}, stop=["\n"], instance_tags=["gpu"], keep_alive=60)
    (record,) = chats(emulators)
    assert record.options == {
        "temperature": 0.2,
        "seed": 7,
        "num_predict": 5,
        "top_k": 3,
        "stop": ["\n"],
        "num_ctx": 131072,
    }
    assert record.keep_alive == 60 and set(record.body) <= CHAT_FIELDS
    assert emulators[1].requests_for("/api/chat") == [record]


def test_session_id_as_field_and_per_call_keeps_a_conversation_on_one_instance(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(3)
    llm = make_llm(instances=instances, load_balancing_strategy="round_robin", session_id="chat-1")
    for _ in range(4):
        llm.chat(HELLO)
    assert sorted(len(e.requests_for("/api/chat")) for e in emulators) == [0, 0, 4]
    for _ in range(3):
        llm.chat(HELLO, session_id="chat-2")  # per call, it wins over the field
    assert all("session_id" not in r.body for r in chats(emulators))
    assert sorted(len(e.requests_for("/api/chat")) for e in emulators) in ([0, 0, 7], [0, 3, 4])
    with pytest.raises(RequestError, match="session_id must be a non-empty string"):
        llm.chat(HELLO, session_id="")


def test_unknown_kwargs_raise_instead_of_being_dropped(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(1)
    llm = make_llm(instances=instances)
    with pytest.raises(TypeError, match="'max_token'"):  # a typo (max_tokens is num_predict, #14)
        llm.chat(HELLO, max_token=5)
    with pytest.raises(TypeError, match="'frobnicate'"):
        llm.stream_complete("hi", frobnicate=True)
    with pytest.raises(TypeError, match="think= or thinking="):
        llm.chat(HELLO, think=True, thinking=False)
    assert emulators[0].requests_for("/api/chat") == []


def test_json_mode_and_format(pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]) -> None:
    emulators, instances = pool(1)
    llm = make_llm(instances=instances, json_mode=True)
    llm.chat(HELLO)
    llm.chat(HELLO, format={"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    first, second = chats(emulators)
    assert first.format == "json" and second.format["required"] == ["a"]


def test_a_per_call_thinking_false_wins_over_the_field(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(1)
    llm = make_llm(instances=instances, model="qwen3", thinking=True)
    thought = llm.chat(HELLO)
    assert isinstance(thought.message.blocks[0], ThinkingBlock) and thought.message.blocks[0].content
    plain = llm.chat(HELLO, thinking=False)
    assert not any(isinstance(b, ThinkingBlock) for b in plain.message.blocks)
    llm.complete("hi", think=False)
    streamed = list(llm.stream_chat(HELLO))
    assert any(c.additional_kwargs.get("thinking_delta") for c in streamed)
    assert [r.think for r in chats(emulators)] == [True, False, False, True]


# -- routing hints ----------------------------------------------------------------------------


def test_fields_are_default_hints_and_a_call_overrides_them(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, tags=[["gpu"], ["cpu"]])
    llm = make_llm(instances=instances, require_gpu=True)
    for _ in range(3):
        assert llm.chat(HELLO).raw["pool"]["instance_id"] == "e0"
    emulators[0].stop()
    with pytest.raises(AllInstancesFailedError):
        llm.chat(HELLO)  # only the gpu instance may serve, and it is down
    assert llm.chat(HELLO, require_gpu=False).raw["pool"]["instance_id"] == "e1"


def test_strategy_fallback_and_latency_hints(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    _, instances = pool(2)
    instances[0]["priority"], instances[1]["priority"] = 2, 1
    llm = make_llm(instances=instances)
    served = {
        llm.chat(HELLO, load_balancing_strategy="priority").raw["pool"]["instance_id"] for _ in range(4)
    }
    assert served == {"e1"}
    response = llm.chat(HELLO, model="llama3.3:70b", fallback_model="llama3.2")
    assert response.raw["pool"]["fallback_used"] and response.raw["pool"]["model"] == "llama3.2"
    assert response.raw["model"] == "llama3.2"  # Ollama echoes the model it ran
    with pytest.raises(RequestError, match="max_latency"):
        llm.chat(HELLO, max_latency=-5)
    with pytest.raises(RequestError, match="strategy"):
        llm.chat(HELLO, load_balancing_strategy="fastest-please")
    assert llm.chat(HELLO, max_latency=60_000).message.content


# -- failover ---------------------------------------------------------------------------------


def test_an_instance_stopped_mid_run(pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]) -> None:
    # What the user sees, whichever path the pool takes: the background health check may mark
    # the stopped instance down before a call reaches it (then no call needs a failover).
    emulators, instances = pool(3)
    llm = make_llm(instances=instances, load_balancing={"strategy": "round_robin"})
    answers = [llm.chat(HELLO) for _ in range(3)]
    emulators[1].stop()
    answers += [llm.chat(HELLO) for _ in range(6)]
    answers += [list(llm.stream_chat(HELLO))[-1] for _ in range(3)]
    assert all(a.message.content for a in answers)
    assert all(a.raw["pool"]["instance_id"] != "e1" for a in answers[3:])


def test_a_call_that_reaches_a_stopped_instance_fails_over(
    pool: Callable[..., Any],
    quiet_pool: Callable[..., OllamaPoolProvider],
    make_llm: Callable[..., OllamaPool],
) -> None:
    # No health checks: only the calls themselves can find out that e1 stopped, so the path is
    # the test's to assert.
    emulators, instances = pool(3)
    llm = make_llm(pool=quiet_pool(instances, strategy="round_robin"))
    answers = [llm.chat(HELLO) for _ in range(3)]
    emulators[1].stop()
    answers += [llm.chat(HELLO) for _ in range(6)]
    answers += [list(llm.stream_chat(HELLO))[-1] for _ in range(3)]
    assert all(a.message.content for a in answers)
    after = [a.raw["pool"] for a in answers[3:]]
    assert all(p["instance_id"] != "e1" for p in after)
    assert any(p["attempts"] == 2 and "e1" in p["errors"][0] for p in after)


async def test_in_flight_calls_fail_over_when_their_instance_stops(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, reply_tokens=100, tokens_per_second=20.0, time_scale=0.02)
    llm = make_llm(instances=instances, load_balancing={"strategy": "round_robin"})
    calls = [asyncio.ensure_future(llm.achat(HELLO)) for _ in range(6)]
    await emulators[0].wait_for_async(lambda: emulators[0].generating() > 0)
    await asyncio.to_thread(emulators[0].stop)
    answers = await asyncio.gather(*calls)
    assert all(a.message.content for a in answers)
    assert any(a.raw["pool"]["attempts"] >= 2 for a in answers)
    assert all(a.raw["pool"]["instance_id"] == "e1" for a in answers if a.raw["pool"]["attempts"] >= 2)
