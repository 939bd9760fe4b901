"""``llama_index.llms.ollama.Ollama`` works against the emulator unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.ollama import Ollama
from pydantic import BaseModel, Field

from gleitzeit_llm.testing import OllamaEmulator

Closing = Callable[[Any], Any]

HELLO = [ChatMessage(role="user", content="Hello!")]


class Song(BaseModel):
    """A song."""

    title: str
    year: int = Field(ge=1900, le=2100)
    genres: list[str]


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def make(emu: OllamaEmulator, closing: Closing, model: str = "llama3.2") -> Ollama:
    return closing(Ollama(model=model, base_url=emu.url, request_timeout=30))


def test_metadata_reads_context_length_from_show(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    metadata = make(ollama_emulator, closing).metadata
    assert metadata.context_window == 131072 and metadata.is_function_calling_model
    assert ollama_emulator.requests[-1].path == "/api/show"
    assert ollama_emulator.loaded_models() == []  # /api/show does not load


def test_chat_stream_chat_and_complete(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    ollama_emulator.responder = lambda req: f"Hi! You said: {req.prompt}"
    llm = make(ollama_emulator, closing)
    assert llm.chat(HELLO).message.content == "Hi! You said: Hello!"
    deltas = [r.delta for r in llm.stream_chat(HELLO)]
    assert "".join(d or "" for d in deltas) == "Hi! You said: Hello!" and len(deltas) > 2
    assert llm.complete("Hello!").text == "Hi! You said: Hello!"


async def test_achat_and_astream(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    llm = make(ollama_emulator, closing)
    reply = await llm.achat(HELLO)
    streamed = [r.delta async for r in await llm.astream_chat(HELLO)]
    assert reply.message.content and "".join(d or "" for d in streamed) == reply.message.content


def test_structured_predict(ollama_emulator: OllamaEmulator, closing: Closing) -> None:
    song = make(ollama_emulator, closing).structured_predict(
        Song, PromptTemplate("Name a song about {topic}."), topic="rain"
    )
    assert isinstance(song, Song) and 1900 <= song.year <= 2100 and song.genres
    assert ollama_emulator.requests[-1].format["title"] == "Song"


def test_tool_calls_with_chat_with_tools_and_predict_and_call(
    ollama_emulator: OllamaEmulator, closing: Closing
) -> None:
    llm = make(ollama_emulator, closing)
    tool = FunctionTool.from_defaults(fn=multiply)
    ollama_emulator.script_tool_calls([{"name": "multiply", "arguments": {"a": 6, "b": 7}}])
    response = llm.chat_with_tools([tool], user_msg="What is 6 times 7?")
    (selection,) = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("multiply", {"a": 6, "b": 7})
    ollama_emulator.script_tool_calls([{"name": "multiply", "arguments": {"a": 3, "b": 5}}])
    output = llm.predict_and_call([tool], "What is 3 times 5?")
    assert str(output) == "15"


def test_a_conversation_reuses_the_servers_prompt_cache(
    ollama_emulator: OllamaEmulator, closing: Closing
) -> None:
    llm = make(ollama_emulator, closing)
    history = [ChatMessage(role="system", content="Answer briefly. " * 20), *HELLO]
    first = llm.chat(history)
    second = llm.chat([*history, first.message, ChatMessage(role="user", content="And then?")])
    assert second.raw["prompt_eval_count"] > first.raw["prompt_eval_count"]
    assert second.raw["prompt_eval_duration"] < first.raw["prompt_eval_duration"]
    record = ollama_emulator.requests_for("/api/chat")[-1]
    assert record.cached_tokens == first.raw["prompt_eval_count"] + first.raw["eval_count"]
