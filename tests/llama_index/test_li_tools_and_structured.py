"""Tool calling and structured output through ``OllamaPool``, with routing hints on every path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from gleitzeit_llm.testing import OllamaEmulator
from llama_index.llms.gleitzeit import OllamaPool


class Song(BaseModel):
    """A song."""

    title: str
    year: int = Field(ge=1900, le=2100)
    genres: list[str]


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


MULTIPLY = FunctionTool.from_defaults(fn=multiply)
SIX_BY_SEVEN = [{"name": "multiply", "arguments": {"a": 6, "b": 7}}]


def only_on(emulators: list[OllamaEmulator], index: int, count: int) -> list[Any]:
    """The chat requests of ``emulators[index]``, asserting all ``count`` of them went there."""
    for i, emu in enumerate(emulators):
        assert len(emu.requests_for("/api/chat")) == (count if i == index else 0), f"emulator {i}"
    return emulators[index].requests_for("/api/chat")


def test_chat_with_tools_keeps_hints_and_model(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, tags=[["cpu"], ["gpu"]])
    llm = make_llm(instances=instances)
    emulators[1].script_tool_calls(SIX_BY_SEVEN, persistent=True)
    history = [ChatMessage(role="system", content="Use tools.")]
    response = llm.chat_with_tools(
        [MULTIPLY], "What is 6 times 7?", chat_history=history, instance_tags=["gpu"]
    )
    (selection,) = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("multiply", {"a": 6, "b": 7})
    assert selection.tool_id.startswith("call_")  # Ollama's id, not the tool name
    assert len(history) == 1  # the caller's history is not appended to
    output = llm.predict_and_call([MULTIPLY], "What is 6 times 7?", instance_tags=["gpu"], model="qwen3")
    assert str(output) == "42"
    records = only_on(emulators, 1, 2)
    assert all(r.tools for r in records) and [r.model for r in records] == ["llama3.2", "qwen3"]
    assert "instance_tags" not in records[0].body


async def test_async_and_streamed_tool_calls(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, tags=[["cpu"], ["gpu"]])
    llm = make_llm(instances=instances)
    emulators[1].script_tool_calls(SIX_BY_SEVEN, persistent=True)
    response = await llm.achat_with_tools([MULTIPLY], "6 times 7?", instance_tags=["gpu"])
    assert llm.get_tool_calls_from_response(response)[0].tool_kwargs == {"a": 6, "b": 7}
    output = await llm.apredict_and_call([MULTIPLY], "6 times 7?", instance_tags=["gpu"])
    assert str(output) == "42"
    chunks = list(llm.stream_chat_with_tools([MULTIPLY], "6 times 7?", instance_tags=["gpu"]))
    assert llm.get_tool_calls_from_response(chunks[-1])[0].tool_name == "multiply"
    achunks = [
        c async for c in await llm.astream_chat_with_tools([MULTIPLY], "6 times 7?", instance_tags=["gpu"])
    ]
    assert llm.get_tool_calls_from_response(achunks[-1])[0].tool_name == "multiply"
    only_on(emulators, 1, 4)


def test_tool_choice_none_sends_no_tools_and_no_call_is_an_error(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(1)
    llm = make_llm(instances=instances)
    response = llm.chat_with_tools([MULTIPLY], "hi", tool_choice="none")
    assert emulators[0].requests_for("/api/chat")[-1].tools is False
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="Expected at least one tool call"):
        llm.get_tool_calls_from_response(response)


def test_parallel_tool_calls_are_cut_to_one_unless_allowed(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(1)
    llm = make_llm(instances=instances)
    two = [*SIX_BY_SEVEN, {"name": "multiply", "arguments": {"a": 2, "b": 3}}]
    emulators[0].script_tool_calls(two)
    assert len(llm.get_tool_calls_from_response(llm.chat_with_tools([MULTIPLY], "go"))) == 1
    emulators[0].script_tool_calls(two)
    output = llm.predict_and_call([MULTIPLY], "go", allow_parallel_tool_calls=True)
    assert str(output) == "42\n\n6"


def test_tool_results_go_back_with_their_tool_name(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(1)
    llm = make_llm(instances=instances)
    history = [
        ChatMessage(role="user", content="6 times 7?"),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[ToolCallBlock(tool_call_id="call_1", tool_name="multiply", tool_kwargs={"a": 6, "b": 7})],
        ),
        ChatMessage(role=MessageRole.TOOL, content="42", additional_kwargs={"tool_call_id": "call_1"}),
    ]
    llm.chat(history)
    sent = emulators[0].requests_for("/api/chat")[-1].body["messages"]
    assert sent[1]["tool_calls"] == [
        {"id": "call_1", "function": {"name": "multiply", "arguments": {"a": 6, "b": 7}}}
    ]
    assert sent[2] == {"role": "tool", "content": "42", "tool_call_id": "call_1", "tool_name": "multiply"}


# llama-index-workflows inspects the agent with inspect.getmembers, touching pydantic's deprecated attributes.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")
async def test_a_function_agent_runs_on_the_pool(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2)
    for emu in emulators:
        emu.script_tool_calls(SIX_BY_SEVEN, persistent=True)
        emu.responder = lambda request: "The answer is 42."
    agent = FunctionAgent(tools=[MULTIPLY], llm=make_llm(instances=instances), streaming=True)
    result = await agent.run("What is 6 times 7?")
    assert "42" in str(result)
    assert [c.tool_output.content for c in result.tool_calls] == ["42"]


# -- structured output ------------------------------------------------------------------------

PROMPT = PromptTemplate("Name a song about {topic}.")


def test_structured_predict_uses_the_schema_and_the_hints(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, tags=[["cpu"], ["gpu"]])
    llm = make_llm(instances=instances)
    hints = {"instance_tags": ["gpu"]}
    song = llm.structured_predict(Song, PROMPT, llm_kwargs=hints, topic="rain")
    assert isinstance(song, Song) and 1900 <= song.year <= 2100
    partials = list(llm.stream_structured_predict(Song, PROMPT, llm_kwargs=hints, topic="rain"))
    assert isinstance(partials[-1], Song) and partials[-1] == song
    records = only_on(emulators, 1, 2)
    assert all(r.format["title"] == "Song" for r in records)
    assert hints == {"instance_tags": ["gpu"]}  # the caller's llm_kwargs are not changed


async def test_async_structured_predict(
    pool: Callable[..., Any], make_llm: Callable[..., OllamaPool]
) -> None:
    emulators, instances = pool(2, tags=[["cpu"], ["gpu"]])
    llm = make_llm(instances=instances)
    song = await llm.astructured_predict(Song, PROMPT, llm_kwargs={"instance_tags": ["gpu"]}, topic="sun")
    assert isinstance(song, Song)
    stream = await llm.astream_structured_predict(
        Song, PROMPT, llm_kwargs={"instance_tags": ["gpu"]}, topic="sun"
    )
    partials = [p async for p in stream]
    assert partials[-1] == song
    only_on(emulators, 1, 2)
