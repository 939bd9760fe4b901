"""ChatOllamaPool against emulated Ollama servers: what users see and what the servers receive."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from lc_support import FAST, LOOPBACK, chat_bodies
from pydantic import BaseModel, Field

from gleitzeit_llm import (
    AllInstancesFailedError,
    GleitzeitError,
    InstanceTimeoutError,
    OllamaPoolProvider,
    RequestError,
    StreamInterruptedError,
)
from gleitzeit_llm.testing import OllamaEmulator, Reply
from langchain_gleitzeit import ChatOllamaPool

pytestmark = LOOPBACK

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"sunny in {city}"


@tool
def get_time(city: str) -> str:
    """Get the local time in a city."""
    return f"noon in {city}"


class Person(BaseModel):
    """Someone the text mentions."""

    name: str
    age: int = Field(ge=0, le=130)


@pytest.fixture
def pool(emulated_pool: Any) -> tuple[OllamaPoolProvider, list[OllamaEmulator]]:
    """Three emulators, one provider (health checks off: every request is visible in the logs)."""
    return emulated_pool(3, health_checks=False)


def every_body(emulators: list[OllamaEmulator]) -> list[dict[str, Any]]:
    return chat_bodies(*emulators)


def test_invoke_returns_content_usage_and_metadata(pool: Any) -> None:
    provider, emulators = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider, temperature=0, num_ctx=2048)
    message = llm.invoke([SystemMessage("Be brief."), HumanMessage("Why is the sky blue?")])
    assert isinstance(message, AIMessage) and message.content
    usage = message.usage_metadata
    assert usage and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    meta = message.response_metadata
    assert meta["model_name"] == "llama3.2" and meta["done_reason"] == "stop"
    assert meta["eval_count"] == usage["output_tokens"] and meta["prompt_eval_count"] == usage["input_tokens"]
    assert all(meta[k] > 0 for k in ("total_duration", "eval_duration"))
    served = meta["pool"]
    assert served["attempts"] == 1 and served["fallback_used"] is False
    by_id = {f"ollama-{i}": e for i, e in enumerate(emulators, start=1)}
    assert served["instance_url"] == by_id[served["instance_id"]].url
    (body,) = every_body(emulators)
    assert body["options"] == {"temperature": 0, "num_ctx": 2048}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the sky blue?"},
    ]


def test_stream_yields_chunks_with_metadata_on_the_last_only(pool: Any) -> None:
    provider, _ = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    chunks = list(llm.stream("Hello there"))
    assert len(chunks) > 3 and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert chunks[-1].chunk_position == "last"
    assert [c for c in chunks if c.usage_metadata] == [chunks[-1]]
    assert all("pool" not in c.response_metadata for c in chunks[:-1])
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.content == "".join(str(c.content) for c in chunks)
    assert full.response_metadata["pool"]["attempts"] == 1
    assert full.response_metadata["model_name"] == "llama3.2"


async def test_async_invoke_stream_and_events(pool: Any) -> None:
    provider, _ = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    assert (await llm.ainvoke("hi")).content
    chunks = [chunk async for chunk in llm.astream("hi")]
    assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata
    kinds = [event["event"] async for event in llm.astream_events("hi", version="v2")]
    assert kinds[0] == "on_chat_model_start" and kinds[-1] == "on_chat_model_end"
    assert kinds.count("on_chat_model_stream") == len(chunks)


def test_batch_and_abatch_spread_over_the_pool(pool: Any) -> None:
    provider, emulators = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    answers = llm.batch([f"question {i}" for i in range(9)], config={"max_concurrency": 9})
    assert len(answers) == 9 and all(a.content for a in answers)
    assert sum(len(chat_bodies(e)) for e in emulators) == 9


async def test_abatch(pool: Any) -> None:
    provider, _ = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    answers = await llm.abatch(["one", "two", "three"])
    assert [type(a) for a in answers] == [AIMessage] * 3


def test_a_chain_of_prompt_model_parser(pool: Any) -> None:
    provider, emulators = pool
    for emulator in emulators:
        emulator.responder = lambda request: f"about {request.prompt}"
    prompt = ChatPromptTemplate.from_messages([("system", "You explain {topic}."), ("human", "{question}")])
    chain = prompt | ChatOllamaPool(model="llama3.2", pool=provider) | StrOutputParser()
    assert (
        chain.invoke({"topic": "physics", "question": "Why is the sky blue?"}) == "about Why is the sky blue?"
    )
    assert "".join(chain.stream({"topic": "x", "question": "y"})) == "about y"


# -- tools ----------------------------------------------------------------------------------------


def test_tool_calls_round_trip_through_an_agent_loop(pool: Any) -> None:
    """The plumbing the real-model standard tests cover, with the emulator's scripted tool calls."""
    provider, emulators = pool
    for emulator in emulators:
        emulator.script_tool_calls([{"name": "get_weather", "arguments": {"city": "Tokyo"}}], persistent=True)
        emulator.responder = lambda request: "It is sunny in Tokyo."
    llm = ChatOllamaPool(model="llama3.2", pool=provider).bind_tools([get_weather, get_time])
    question = HumanMessage("What is the weather in Tokyo?")
    call_message = llm.invoke([question])
    assert [(c["name"], c["args"]) for c in call_message.tool_calls] == [("get_weather", {"city": "Tokyo"})]
    assert any(block["type"] == "tool_call" for block in call_message.content_blocks)
    result = get_weather.invoke(call_message.tool_calls[0])
    assert isinstance(result, ToolMessage)
    final = llm.invoke([question, call_message, result])
    assert final.content == "It is sunny in Tokyo." and not final.tool_calls

    first, second = every_body(emulators)
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather", "get_time"]
    assistant, tool_result = second["messages"][1:]
    assert assistant["tool_calls"] == [
        {
            "id": call_message.tool_calls[0]["id"],
            "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}},
        }
    ]
    assert tool_result == {
        "role": "tool",
        "content": "sunny in Tokyo",
        "tool_call_id": call_message.tool_calls[0]["id"],
        "tool_name": "get_weather",
    }


async def test_streamed_tool_calls_merge_into_one_call(pool: Any) -> None:
    provider, emulators = pool
    for emulator in emulators:
        emulator.script_tool_calls(["get_weather", "get_time"], persistent=True)
    llm = ChatOllamaPool(model="llama3.2", pool=provider).bind_tools([get_weather, get_time])
    full: Any = None
    async for chunk in llm.astream("weather and time in Paris?"):
        full = chunk if full is None else full + chunk
    assert [c["name"] for c in full.tool_calls] == ["get_weather", "get_time"]
    assert all(isinstance(c["args"].get("city"), str) for c in full.tool_calls)


def test_structured_output_by_schema_tool_call_and_json_mode(pool: Any) -> None:
    provider, emulators = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    person = llm.with_structured_output(Person).invoke("Ada is 36.")
    assert isinstance(person, Person) and 0 <= person.age <= 130
    assert every_body(emulators)[-1]["format"] == Person.model_json_schema()

    for emulator in emulators:
        emulator.script_tool_calls(
            [{"name": "Person", "arguments": {"name": "Ada", "age": 36}}], persistent=True
        )
    by_tool = llm.with_structured_output(Person, method="function_calling", include_raw=True).invoke(
        "Ada is 36."
    )
    assert by_tool["parsed"] == Person(name="Ada", age=36) and by_tool["parsing_error"] is None
    assert [t["function"]["name"] for t in every_body(emulators)[-1]["tools"]] == ["Person"]

    for emulator in emulators:
        emulator.responder = lambda request: json.dumps({"name": "Ada", "age": 36})
    assert llm.with_structured_output(Person, method="json_mode").invoke("Ada is 36.") == Person(
        name="Ada", age=36
    )
    assert every_body(emulators)[-1]["format"] == "json"


# -- reasoning, images, model override, stop ----------------------------------------------------


def test_reasoning_goes_into_reasoning_content(pool: Any) -> None:
    provider, emulators = pool
    llm = ChatOllamaPool(model="qwen3", pool=provider, reasoning=True)
    message = llm.invoke("Think first.")
    assert message.additional_kwargs["reasoning_content"].startswith("Okay")
    assert message.content and every_body(emulators)[-1]["think"] is True
    streamed: Any = None
    for chunk in llm.stream("Think first."):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.additional_kwargs["reasoning_content"] == message.additional_kwargs["reasoning_content"]
    off = llm.invoke("Just answer.", reasoning=False)
    assert "reasoning_content" not in off.additional_kwargs and every_body(emulators)[-1]["think"] is False


def test_images_reach_ollama_as_base64(pool: Any) -> None:
    provider, emulators = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    llm.invoke(
        [
            HumanMessage(
                content=[
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ]
            )
        ]
    )
    assert every_body(emulators)[-1]["messages"] == [
        {"role": "user", "content": "What is in this image?", "images": [PNG_B64]}
    ]


def test_per_call_model_overrides_and_is_traced(pool: Any) -> None:
    provider, emulators = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    message = llm.invoke("hi", model="qwen3")
    assert message.response_metadata["model_name"] == "qwen3"
    assert every_body(emulators)[-1]["model"] == "qwen3"
    assert llm.bind(model="qwen3").invoke("hi").response_metadata["model_name"] == "qwen3"
    assert llm._get_ls_params(model="qwen3")["ls_model_name"] == "qwen3"


def test_stop_sequences_cut_the_answer(pool: Any) -> None:
    provider, emulators = pool
    for emulator in emulators:
        emulator.responder = lambda request: "Hello to you and all."
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    assert llm.invoke("hi", stop=["you"]).content == "Hello to "
    assert every_body(emulators)[-1]["options"] == {"stop": ["you"]}
    assert (
        ChatOllamaPool(model="llama3.2", pool=provider, stop=["all"]).invoke("hi").content
        == "Hello to you and "
    )


def test_thinking_and_answer_from_a_responder(pool: Any) -> None:
    provider, emulators = pool
    for emulator in emulators:
        emulator.responder = lambda request: Reply("Paris.", thinking="France's capital.")
    message = ChatOllamaPool(model="qwen3", pool=provider).invoke("Capital of France?", reasoning=True)
    assert message.content == "Paris." and message.additional_kwargs == {
        "reasoning_content": "France's capital."
    }


# -- the pool: fallback, errors, timeouts ----------------------------------------------------------


def test_fallback_model_answers_when_the_model_is_missing(pool: Any) -> None:
    provider, _ = pool
    llm = ChatOllamaPool(model="llama3.3:70b", pool=provider, fallback_model="llama3.2")
    message = llm.invoke("hi")
    assert message.response_metadata["model_name"] == "llama3.2"
    assert message.response_metadata["pool"]["fallback_used"] is True
    assert message.response_metadata["pool"]["requested_model"] == "llama3.3:70b"


def test_caller_mistakes_raise_before_any_request(pool: Any) -> None:
    provider, emulators = pool
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    with pytest.raises(RequestError, match="'temprature'"):
        llm.invoke("hi", temprature=0)
    with pytest.raises(ValueError, match="instance_tags"):
        llm.invoke("hi", instance_tags="gpu")
    with pytest.raises(RequestError):
        llm.invoke("hi", keep_alive="forever")
    assert every_body(emulators) == []


def test_all_instances_down_is_one_error_naming_each_attempt(emulated_pool: Any) -> None:
    provider, emulators = emulated_pool(2, health_checks=False, load_balancing={"retry_backoff_base": 0})
    for emulator in emulators:
        emulator.stop()
    with pytest.raises(AllInstancesFailedError) as caught:
        ChatOllamaPool(model="llama3.2", pool=provider).invoke("hi")
    assert isinstance(caught.value, GleitzeitError) and len(caught.value.errors) >= 2


def test_a_stream_broken_after_its_first_chunk_raises(emulated_pool: Any) -> None:
    provider, (emulator,) = emulated_pool(1, health_checks=False)
    emulator.set_faults(drop_after_chunks=2)
    llm = ChatOllamaPool(model="llama3.2", pool=provider)
    seen: list[Any] = []
    with pytest.raises(StreamInterruptedError):
        for chunk in llm.stream("hi"):
            seen.append(chunk)
    assert len(seen) == 2


def test_a_timeout_surfaces_as_an_instance_timeout(
    ollama_emulators: Any, closing: Callable[[Any], Any]
) -> None:
    (emulator,) = ollama_emulators(1, time_scale=FAST)
    emulator.set_faults(hang=True)
    llm = closing(
        ChatOllamaPool(
            model="llama3.2", instances=[emulator.url], timeout=0.2, max_retries=0, health_checks=False
        )
    )
    with pytest.raises(InstanceTimeoutError):
        llm.invoke("hi")
    emulator.clear_faults()


def test_validate_model_on_init(emulated_pool: Any, ollama_emulators: Any) -> None:
    provider, _ = emulated_pool(2)
    assert ChatOllamaPool(model="llama3.2:latest", pool=provider, validate_model_on_init=True)
    with pytest.raises(ValueError, match="not found on any instance"):
        ChatOllamaPool(model="llama9", pool=provider, validate_model_on_init=True)
    (down,) = ollama_emulators(1)
    url = down.url
    down.close()
    with pytest.raises(ValueError, match="Failed to connect"):
        ChatOllamaPool(model="llama3.2", instances=[url], validate_model_on_init=True)


def test_a_model_built_from_urls_owns_and_closes_its_pool(ollama_emulators: Any) -> None:
    (emulator,) = ollama_emulators(1)
    llm = ChatOllamaPool(model="llama3.2", instances=[emulator.url])
    assert llm.invoke("hi").content
    llm.close()
    with pytest.raises(GleitzeitError, match="closed"):
        llm.invoke("hi")


async def test_aclose_closes_the_connections_of_the_running_loop(ollama_emulators: Any) -> None:
    (emulator,) = ollama_emulators(1)
    llm = ChatOllamaPool(model="llama3.2", instances=[emulator.url])
    assert (await llm.ainvoke("hi")).content
    await llm.aclose()
    assert llm.provider._closed
