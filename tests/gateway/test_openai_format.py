"""The OpenAI <-> Ollama translation of the gateway's /v1 routes, judged by clients we did not write.

Every answer is validated with the official ``openai`` SDK's own types, streams are decoded with
its SSE decoder and assembled with its stream accumulator, and every Ollama body with the
``ollama`` client's request types. No sockets: these are pure functions.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import httpx
import ollama._types as ollama_types
import openai
import pytest
from openai._streaming import SSEDecoder, Stream
from openai.lib._parsing._embeddings import parse_embedding_response
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion, CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gleitzeit_llm.errors import RequestError
from gleitzeit_llm.gateway import openai_format as f

CREATED = 1761499281
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def ollama_chunk(content: str = "", *, done: bool = False, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    for key in ("thinking", "tool_calls"):
        if key in extra:
            message[key] = extra.pop(key)
    chunk = {
        "model": "llama3.2",
        "created_at": "2025-07-07T20:22:19.184789Z",
        "message": message,
        "done": done,
    }
    if done:
        chunk.update(done_reason="stop", prompt_eval_count=26, eval_count=3)
    chunk.update(extra)
    return chunk


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments}}


def decode(data: bytes, *, split: int | None = None) -> list[str]:
    """The ``data`` of each event, decoded by the SDK's SSE decoder; the bytes arrive in random
    pieces (cut mid-line and mid-character) when ``split`` seeds the cutting."""
    pieces = [data]
    if split is not None:
        rng = random.Random(split)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 40)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [event.data for event in SSEDecoder().iter_bytes(iter(pieces))]


def stream_chat(chunks: list[dict[str, Any]], *, include_usage: bool = False) -> list[str]:
    stream = f.ChatStream("llama3.2", "chatcmpl-1", CREATED, include_usage=include_usage)
    return decode(b"".join(stream.feed(c) for c in chunks), split=len(chunks))


def assemble(events: list[str], tools: list[dict[str, Any]] | None = None) -> Any:
    """The SDK's own accumulation of streamed chunks (what ``client.chat.completions.stream`` does)."""
    assert events[-1] == "[DONE]"
    state = ChatCompletionStreamState(input_tools=tools or openai.omit)
    for data in events[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(json.loads(data)))
    return state.get_final_completion()


# --- framing ---------------------------------------------------------------------------------------------


def test_sse_events_survive_the_sdk_decoder_in_any_split() -> None:
    objects = [{"text": "line one\nline two"}, {"text": "ümlaut ✓ \r\n data: not a field"}, {"n": 3}]
    data = b"".join(map(f.sse, objects)) + f.sse_done()
    for seed in range(10):
        events = decode(data, split=seed)
        assert [json.loads(e) for e in events[:-1]] == objects
        assert events[-1] == "[DONE]"


def test_sse_done_is_openais_terminator() -> None:
    assert f.sse_done() == b"data: [DONE]\n\n"


def sdk_stream(data: bytes) -> Stream[ChatCompletionChunk]:
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    response = httpx.Response(
        200, content=data, request=httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    )
    return Stream(cast_to=ChatCompletionChunk, response=response, client=client)


def test_an_error_event_after_the_first_chunk_raises_in_the_sdk() -> None:
    stream = f.ChatStream("llama3.2", "chatcmpl-1", CREATED)
    data = stream.feed(ollama_chunk("Hel")) + f.sse_error(
        "instance failed mid-stream", "api_error", "upstream"
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in sdk_stream(data):
            received.append(chunk.choices[0].delta.content)
    assert received == ["Hel"]
    assert info.value.message == "instance failed mid-stream"
    assert info.value.body == {
        "message": "instance failed mid-stream",
        "type": "api_error",
        "param": None,
        "code": "upstream",
    }


def test_the_sdk_stream_reads_a_whole_translated_stream() -> None:
    stream = f.ChatStream("llama3.2", "chatcmpl-1", CREATED)
    data = b"".join(
        stream.feed(c) for c in [ollama_chunk("The"), ollama_chunk(" sky"), ollama_chunk(done=True)]
    )
    chunks = list(sdk_stream(data))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The sky"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_error_body_has_openais_shape() -> None:
    assert f.error_body("model 'x' not found", "not_found_error") == {
        "error": {"message": "model 'x' not found", "type": "not_found_error", "param": None, "code": None}
    }
    assert f.error_body("bad", "invalid_request_error", "messages", "x")["error"]["param"] == "messages"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (413, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "api_error"),
    ],
)
def test_error_type_follows_the_status(status: int, kind: str) -> None:
    assert f.error_type(status) == kind


def test_new_ids_carry_the_kind_and_do_not_repeat() -> None:
    ids = {f.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("chatcmpl-") for i in ids)
    assert f.new_id("cmpl").startswith("cmpl-")


# --- chat answers ------------------------------------------------------------------------------------------


def test_chat_response_validates_as_a_chat_completion() -> None:
    final = ollama_chunk("Hello! How are you today?", done=True)
    body = f.chat_response(final, "llama3.2", "chatcmpl-7", CREATED)
    completion = ChatCompletion.model_validate(body)
    assert completion.id == "chatcmpl-7"
    assert completion.created == CREATED
    assert completion.model == "llama3.2"
    assert completion.system_fingerprint == "fp_ollama"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hello! How are you today?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (26, 3)
    assert completion.usage.total_tokens == 29


@pytest.mark.parametrize(
    ("done_reason", "finish"), [("stop", "stop"), ("length", "length"), ("load", "stop"), (None, "stop")]
)
def test_chat_finish_reason_maps_done_reason(done_reason: str | None, finish: str) -> None:
    final = ollama_chunk("x", done=True, done_reason=done_reason)
    assert (
        ChatCompletion.model_validate(f.chat_response(final, "m", "id", 1)).choices[0].finish_reason == finish
    )


def test_chat_response_with_tool_calls_gives_json_string_arguments_and_ids() -> None:
    calls = [
        {
            "id": "call_k3j9x2ab",
            "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}},
        },
        tool_call("get_time", zone="JST"),
    ]
    final = ollama_chunk("", done=True, tool_calls=calls)
    completion = ChatCompletion.model_validate(f.chat_response(final, "llama3.2", "chatcmpl-1", CREATED))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    made = choice.message.tool_calls
    assert made is not None
    assert [c.function.name for c in made] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in made] == [{"city": "Tokyo"}, {"zone": "JST"}]
    assert made[0].id == "call_k3j9x2ab"
    assert made[1].id.startswith("call_") and made[1].id != made[0].id
    assert all(c.type == "function" for c in made)


def test_a_tool_call_ending_in_length_keeps_length() -> None:
    final = ollama_chunk("", done=True, done_reason="length", tool_calls=[tool_call("f")])
    assert f.chat_response(final, "m", "id", 1)["choices"][0]["finish_reason"] == "length"


def test_chat_response_carries_thinking_as_reasoning_and_logprobs() -> None:
    logprobs = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]
    final = ollama_chunk("Hi", done=True, thinking="the user greets", logprobs=logprobs)
    completion = ChatCompletion.model_validate(f.chat_response(final, "m", "id", 1))
    assert completion.choices[0].message.reasoning == "the user greets"  # type: ignore[attr-defined]
    assert completion.choices[0].logprobs is not None
    assert completion.choices[0].logprobs.content[0].token == "Hi"  # type: ignore[index]


# --- chat streams ------------------------------------------------------------------------------------------


def test_chat_stream_assembles_to_the_full_text_with_role_once() -> None:
    events = stream_chat(
        [ollama_chunk("The"), ollama_chunk(" sky"), ollama_chunk(" is blue."), ollama_chunk(done=True)]
    )
    chunks = [ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]
    roles = [c.choices[0].delta.role for c in chunks]
    assert roles[0] == "assistant" and not any(roles[1:])
    assert {c.id for c in chunks} == {"chatcmpl-1"} and {c.created for c in chunks} == {CREATED}
    # the metrics-only trailer makes no empty content chunk: content chunks, then the finish chunk
    assert [c.choices[0].delta.content for c in chunks] == ["The", " sky", " is blue.", None]
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, "stop"]
    completion = assemble(events)
    assert completion.choices[0].message.content == "The sky is blue."
    assert completion.choices[0].finish_reason == "stop"


def test_chat_stream_usage_chunk_only_when_asked() -> None:
    chunks = [ollama_chunk("Hi"), ollama_chunk(done=True)]
    assert all("usage" not in json.loads(e) for e in stream_chat(chunks)[:-1])
    events = stream_chat(chunks, include_usage=True)
    last = ChatCompletionChunk.model_validate(json.loads(events[-2]))
    assert last.choices == []
    assert last.usage is not None and (last.usage.prompt_tokens, last.usage.total_tokens) == (26, 29)
    assert assemble(events).usage.completion_tokens == 3


def test_chat_stream_tool_calls_get_indexes_and_assemble_with_the_sdk() -> None:
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
        for n in ("get_weather", "get_time")
    ]
    # Ollama sends each parsed call in its own chunk, each with function.index 0 when parsed alone.
    first = {"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}}
    second = {"id": "call_b", "function": {"index": 0, "name": "get_time", "arguments": {"zone": "JST"}}}
    events = stream_chat(
        [ollama_chunk(tool_calls=[first]), ollama_chunk(tool_calls=[second]), ollama_chunk(done=True)]
    )
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:2]]
    assert [d["tool_calls"][0]["index"] for d in deltas] == [0, 1]
    completion = assemble(events, tools)
    calls = completion.choices[0].message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_a", "get_weather", {"city": "Tokyo"}),
        ("call_b", "get_time", {"zone": "JST"}),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_chat_stream_splits_thinking_from_content_like_ollama() -> None:
    events = stream_chat(
        [ollama_chunk("Hi", thinking="greeting"), ollama_chunk(" there"), ollama_chunk(done=True)]
    )
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0] == {"role": "assistant", "reasoning": "greeting"}
    assert deltas[1] == {"content": "Hi"}
    assert assemble(events).choices[0].message.content == "Hi there"


def test_an_empty_answer_still_opens_with_the_role() -> None:
    events = stream_chat([ollama_chunk(done=True)])
    first = ChatCompletionChunk.model_validate(json.loads(events[0]))
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert json.loads(events[1])["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert events[2:] == ["[DONE]"]


def test_content_in_the_done_chunk_is_sent_before_the_finish() -> None:
    events = stream_chat([ollama_chunk("A"), ollama_chunk("B", done=True, done_reason="length")])
    # the SDK's get_final_completion refuses a cut-off answer (LengthFinishReasonError)
    with pytest.raises(openai.LengthFinishReasonError) as info:
        assemble(events)
    completion = info.value.completion
    assert completion.choices[0].message.content == "AB"
    assert completion.choices[0].finish_reason == "length"


def test_chat_stream_says_when_it_is_done() -> None:
    stream = f.ChatStream("m", "id", 1)
    assert stream.feed(ollama_chunk("x")).endswith(b"\n\n") and not stream.done
    assert stream.feed(ollama_chunk(done=True)).endswith(f.sse_done()) and stream.done


def test_chat_chunk_alone_numbers_tool_calls_from_the_given_index() -> None:
    chunk = f.chat_chunk(ollama_chunk(tool_calls=[tool_call("f")]), "m", "id", 1, False, 3)
    ChatCompletionChunk.model_validate(chunk)
    assert chunk["choices"][0]["delta"]["tool_calls"][0]["index"] == 3
    assert "role" not in chunk["choices"][0]["delta"]


# --- completions -------------------------------------------------------------------------------------------


def generate_chunk(text: str = "", *, done: bool = False, **extra: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "model": "llama3.2",
        "created_at": "2023-08-04T19:22:45Z",
        "response": text,
        "done": done,
    }
    if done:
        chunk.update(done_reason="stop", context=[1, 2], prompt_eval_count=26, eval_count=290)
    chunk.update(extra)
    return chunk


def test_completion_response_validates_as_a_completion() -> None:
    body = f.completion_response(generate_chunk("The sky", done=True), "llama3.2", "cmpl-1", CREATED)
    completion = Completion.model_validate(body)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "The sky"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 316
    body = f.completion_response(generate_chunk("x", done=True, done_reason="length"), "m", "c", 1)
    assert Completion.model_validate(body).choices[0].finish_reason == "length"


@pytest.mark.parametrize("include_usage", [False, True])
def test_completion_stream_gives_the_text_and_ends_with_done(include_usage: bool) -> None:
    stream = f.CompletionStream("llama3.2", "cmpl-1", CREATED, include_usage=include_usage)
    chunks = [generate_chunk("The"), generate_chunk(" sky"), generate_chunk(done=True)]
    events = decode(b"".join(stream.feed(c) for c in chunks), split=1)
    assert events[-1] == "[DONE]" and stream.done
    bodies = [json.loads(e) for e in events[:-1]]
    text_chunks = [b for b in bodies if b["choices"]]
    # non-final chunks carry finish_reason null, which the SDK's (response) type does not allow
    assert [b["choices"][0]["finish_reason"] for b in text_chunks] == [None, None, "stop"]
    for b in text_chunks[:-1]:
        Completion.model_validate({**b, "choices": [{**b["choices"][0], "finish_reason": "stop"}]})
    Completion.model_validate(text_chunks[-1])
    assert "".join(b["choices"][0]["text"] for b in text_chunks) == "The sky"
    if include_usage:
        usage = Completion.model_validate(bodies[-1])
        assert usage.choices == [] and usage.usage is not None and usage.usage.completion_tokens == 290
    else:
        assert len(bodies) == 3 and all("usage" not in b for b in bodies)


# --- embeddings and models --------------------------------------------------------------------------------


EMBED = {"model": "all-minilm", "embeddings": [[0.25, -0.5, 0.125], [1.0, 0.0, -1.0]], "prompt_eval_count": 8}


def test_embeddings_response_validates_with_float_vectors() -> None:
    response = CreateEmbeddingResponse.model_validate(f.embeddings_response(EMBED, "all-minilm"))
    assert [d.embedding for d in response.data] == EMBED["embeddings"]
    assert [d.index for d in response.data] == [0, 1]
    assert response.model == "all-minilm"
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (8, 8)


def test_embeddings_response_base64_decodes_with_the_sdks_own_parser() -> None:
    body = f.embeddings_response(EMBED, "all-minilm", "base64")
    assert all(isinstance(d["embedding"], str) for d in body["data"])
    # what `client.embeddings.create(...)` does by default: ask for base64, decode float32
    response = parse_embedding_response(
        CreateEmbeddingResponse.construct(**body), encoding_format=openai.omit
    )
    assert [d.embedding for d in response.data] == EMBED["embeddings"]  # exact in float32


def test_an_empty_embed_answer_is_an_empty_list() -> None:
    body = f.embeddings_response({"model": "m", "embeddings": []}, "m")
    assert CreateEmbeddingResponse.model_validate(body).data == []


def test_models_list_is_the_union_one_entry_per_model() -> None:
    tags = [
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "modified_at": "2025-05-04T17:37:44.706015396-07:00",
        },
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "modified_at": "2025-06-01T00:00:00Z"},
        {"name": "jmorgan/custom:7b", "modified_at": "2024-01-01T00:00:00.5Z"},
        {"name": "all-minilm:latest", "model": "all-minilm:latest"},
    ]
    body = f.models_list(tags)
    assert body["object"] == "list"
    models = [Model.model_validate(m) for m in body["data"]]
    assert [m.id for m in models] == ["llama3.2:latest", "jmorgan/custom:7b", "all-minilm:latest"]
    assert [m.owned_by for m in models] == ["library", "jmorgan", "library"]
    assert models[0].created == 1746405464  # 2025-05-04T17:37:44-07:00
    assert models[1].created == 1704067200
    assert models[2].created == 0
    assert f.models_list([]) == {"object": "list", "data": []}


# --- chat requests ------------------------------------------------------------------------------------------


def chat(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "llama3.2")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    model, out = f.chat_request(body)
    assert model == body["model"]
    ollama_types.ChatRequest.model_validate(out)  # the shape the ollama client would send
    return out


def test_a_plain_chat_request_gets_ollamas_v1_defaults() -> None:
    assert chat() == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "options": {"temperature": 1.0, "top_p": 1.0},
    }


def test_sampling_fields_become_options() -> None:
    out = chat(
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop="\n",
        seed=7,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
    )
    assert out["stream"] is True
    assert out["options"] == {
        "stop": ["\n"],
        "num_predict": 50,
        "temperature": 0.2,
        "seed": 7,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "top_p": 0.9,
    }
    assert chat(stop=["a", "b"])["options"]["stop"] == ["a", "b"]


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert chat(max_completion_tokens=10)["options"]["num_predict"] == 10
    assert chat(max_completion_tokens=10, max_tokens=99)["options"]["num_predict"] == 10


def test_include_usage_reads_stream_options() -> None:
    assert f.include_usage({"stream_options": {"include_usage": True}}) is True
    assert f.include_usage({"stream_options": {}}) is False
    assert f.include_usage({}) is False


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
        ({"type": "json_schema", "json_schema": {"name": "w"}}, None),
        ({"type": "json_schema"}, None),
        ({"type": "text"}, None),
    ],
)
def test_response_format_becomes_format(response_format: dict[str, Any], expected: Any) -> None:
    assert chat(response_format=response_format).get("format") == expected


def test_content_parts_become_one_message_each_with_base64_images() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": f"data:;base64,{PNG}"},
    ]
    out = chat(messages=[{"role": "user", "content": parts}])
    assert out["messages"] == [
        {"role": "user", "content": "What is this?"},
        {"role": "user", "content": "", "images": [PNG]},
        {"role": "user", "content": "", "images": [PNG]},
    ]


def test_input_audio_travels_as_an_image_like_ollama() -> None:
    part = {"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}}
    assert chat(messages=[{"role": "user", "content": [part]}])["messages"][0]["images"] == [PNG]


def test_tool_calls_and_results_round_trip_into_ollamas_messages() -> None:
    messages = [
        {"role": "user", "content": "Weather in Tokyo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "11 degrees celsius"},
        {"role": "tool", "name": "explicit", "content": "x"},
        {
            "role": "assistant",
            "content": "",
            "reasoning": "thought",
            "tool_calls": [{"function": {"name": "f", "arguments": ""}}],
        },
    ]
    out = chat(messages=messages)["messages"]
    assert out[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}],
    }
    assert out[2] == {
        "role": "tool",
        "content": "11 degrees celsius",
        "tool_name": "get_weather",
        "tool_call_id": "call_1",
    }
    assert out[3] == {"role": "tool", "content": "x", "tool_name": "explicit"}
    assert out[4] == {
        "role": "assistant",
        "content": "",
        "thinking": "thought",
        "tool_calls": [{"function": {"name": "f", "arguments": {}}}],
    }


TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]


@pytest.mark.parametrize(
    ("tool_choice", "names"),
    [
        (None, ["get_weather", "get_time"]),
        ("auto", ["get_weather", "get_time"]),
        ("required", ["get_weather", "get_time"]),
        ("none", []),
        ({"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
    ],
)
def test_tool_choice_is_expressed_through_the_tools_sent(tool_choice: Any, names: list[str]) -> None:
    out = chat(tools=TOOLS, tool_choice=tool_choice)
    assert [t["function"]["name"] for t in out.get("tools", [])] == names


@pytest.mark.parametrize(
    ("body", "think"),
    [
        ({"reasoning_effort": "high"}, "high"),
        ({"reasoning_effort": "minimal"}, "low"),
        ({"reasoning_effort": "xhigh"}, "max"),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning": {"effort": "medium"}, "reasoning_effort": "low"}, "medium"),
        ({}, None),
    ],
)
def test_reasoning_effort_becomes_think(body: dict[str, Any], think: Any) -> None:
    assert chat(**body).get("think") == think


def test_logprobs_are_asked_for() -> None:
    out = chat(logprobs=True, top_logprobs=3)
    assert (out["logprobs"], out["top_logprobs"]) == (True, 3)
    assert "logprobs" not in chat(logprobs=False, top_logprobs=3)


def test_the_callers_body_is_not_changed() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    body = {"model": "m", "messages": messages, "tools": TOOLS, "stop": ["x"]}
    before = json.dumps(body)
    chat(**body)
    assert json.dumps(body) == before


# --- completion and embedding requests --------------------------------------------------------------------


def test_completion_request_follows_ollamas_v1() -> None:
    model, out = f.completion_request(
        {"model": "llama3.2", "prompt": "Why", "suffix": "end", "max_tokens": 5}
    )
    assert model == "llama3.2"
    ollama_types.GenerateRequest.model_validate(out)
    assert out == {
        "model": "llama3.2",
        "prompt": "Why",
        "stream": False,
        "suffix": "end",
        "options": {
            "num_predict": 5,
            "temperature": 1.0,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
            "top_p": 1.0,
        },
    }
    _, out = f.completion_request({"model": "m", "prompt": ["one"], "top_p": 0, "stream": True, "n": 1})
    assert (out["prompt"], out["options"]["top_p"], out["stream"]) == ("one", 1.0, True)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"input": "hello"}, "hello"),
        ({"input": ["a", "b"]}, ["a", "b"]),
        ({"input": ""}, [""]),
        ({"input": "x", "encoding_format": "base64", "dimensions": 3}, "x"),
    ],
)
def test_embeddings_request_passes_text_input(body: dict[str, Any], expected: Any) -> None:
    model, out = f.embeddings_request({"model": "all-minilm", **body})
    assert model == "all-minilm"
    ollama_types.EmbedRequest.model_validate(out)
    assert out["input"] == expected
    assert out.get("dimensions") == body.get("dimensions")
    assert "encoding_format" not in out


# --- every error path ---------------------------------------------------------------------------------

MSG = [{"role": "user", "content": "Hi"}]
ERRORS: list[tuple[Any, Any, str | None, str]] = [
    # chat
    (f.chat_request, [], None, "JSON object"),
    (f.chat_request, {"messages": MSG}, "model", "model is required"),
    (f.chat_request, {"model": " ", "messages": MSG}, "model", "model is required"),
    (f.chat_request, {"model": 3, "messages": MSG}, "model", "model is required"),
    (f.chat_request, {"model": "m"}, "messages", "array"),
    (f.chat_request, {"model": "m", "messages": []}, "messages", "[] is too short - 'messages'"),
    (f.chat_request, {"model": "m", "messages": ["hi"]}, "messages[0]", "object"),
    (f.chat_request, {"model": "m", "messages": [{"content": "x"}]}, "messages[0].role", "role is required"),
    (f.chat_request, {"model": "m", "messages": [{"role": "user"}]}, "messages[0].content", "got null"),
    (
        f.chat_request,
        {"model": "m", "messages": [{"role": "user", "content": 3}]},
        "messages[0].content",
        "number",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": [{"role": "user", "content": ["x"]}]},
        "messages[0].content[0]",
        "object",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "messages[0].content[0].type",
        "text, image_url or input_audio",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        "messages[0].content[0].text",
        "must be a string",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
            ],
        },
        "messages[0].content[0].image_url.url",
        "image URLs are not currently supported",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": "data:image/gif;base64,AAAA"}],
                }
            ],
        },
        "messages[0].content[0].image_url",
        "invalid image input",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,***"}}],
                }
            ],
        },
        "messages[0].content[0].image_url.url",
        "not valid base64",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content[0].image_url.url",
        "data URL string",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
        },
        "messages[0].content[0].input_audio.data",
        "missing data",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%"}}]}
            ],
        },
        "messages[0].content[0].input_audio.data",
        "base64",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": {}}]},
        "messages[0].tool_calls",
        "array",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": [{"role": "assistant", "content": None, "tool_calls": [{"type": "function"}]}],
        },
        "messages[0].tool_calls[0].function",
        "'function'",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}],
                }
            ],
        },
        "messages[0].tool_calls[0].function.arguments",
        "invalid tool call arguments",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
        },
        "messages[0].tool_calls[0].function.arguments",
        "invalid tool call arguments",
    ),
    (f.chat_request, {"model": "m", "messages": MSG, "n": 2}, "n", "n must be 1"),
    (f.chat_request, {"model": "m", "messages": MSG, "stream": "yes"}, "stream", "true or false"),
    (f.chat_request, {"model": "m", "messages": MSG, "stream_options": True}, "stream_options", "object"),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "stream_options": {"include_usage": "y"}},
        "stream_options.include_usage",
        "true or false",
    ),
    (f.chat_request, {"model": "m", "messages": MSG, "temperature": "hot"}, "temperature", "number"),
    (f.chat_request, {"model": "m", "messages": MSG, "top_p": True}, "top_p", "number"),
    (f.chat_request, {"model": "m", "messages": MSG, "max_tokens": 1.5}, "max_tokens", "integer"),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "max_completion_tokens": "9"},
        "max_completion_tokens",
        "integer",
    ),
    (f.chat_request, {"model": "m", "messages": MSG, "seed": 0.5}, "seed", "integer"),
    (f.chat_request, {"model": "m", "messages": MSG, "frequency_penalty": []}, "frequency_penalty", "number"),
    (f.chat_request, {"model": "m", "messages": MSG, "stop": 3}, "stop", "string or an array of strings"),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "stop": ["a", 1]},
        "stop",
        "string or an array of strings",
    ),
    (f.chat_request, {"model": "m", "messages": MSG, "response_format": "json"}, "response_format", "'type'"),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "response_format": {"type": "xml"}},
        "response_format",
        "'type'",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "response_format": {"type": "json_schema", "json_schema": "s"}},
        "response_format.json_schema",
        "object",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": MSG,
            "response_format": {"type": "json_schema", "json_schema": {"schema": []}},
        },
        "response_format.json_schema.schema",
        "JSON Schema object",
    ),
    (f.chat_request, {"model": "m", "messages": MSG, "tools": {}}, "tools", "array"),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "tools": [{"type": "function"}]},
        "tools[0].function",
        "'function'",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "tools": TOOLS, "tool_choice": "any"},
        "tool_choice",
        "'none'",
    ),
    (
        f.chat_request,
        {
            "model": "m",
            "messages": MSG,
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "nope"}},
        },
        "tool_choice",
        "not among tools",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "reasoning_effort": "extreme"},
        "reasoning_effort",
        "invalid reasoning value",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "reasoning": {"effort": "lots"}},
        "reasoning.effort",
        "invalid reasoning value",
    ),
    (
        f.chat_request,
        {"model": "m", "messages": MSG, "logprobs": True, "top_logprobs": -1},
        "top_logprobs",
        "at least 0",
    ),
    # completions
    (f.completion_request, "prompt", None, "JSON object"),
    (f.completion_request, {"prompt": "x"}, "model", "model is required"),
    (f.completion_request, {"model": "m"}, "prompt", "got null"),
    (f.completion_request, {"model": "m", "prompt": [1, 2, 3]}, "prompt", "token arrays"),
    (f.completion_request, {"model": "m", "prompt": ["a", "b"]}, "prompt", "several prompts"),
    (f.completion_request, {"model": "m", "prompt": "x", "echo": True}, "echo", "echo is not supported"),
    (f.completion_request, {"model": "m", "prompt": "x", "best_of": 3}, "best_of", "best_of must be 1"),
    (f.completion_request, {"model": "m", "prompt": "x", "n": 4}, "n", "n must be 1"),
    (f.completion_request, {"model": "m", "prompt": "x", "suffix": 1}, "suffix", "string"),
    (f.completion_request, {"model": "m", "prompt": "x", "stop": {}}, "stop", "string or an array"),
    (f.completion_request, {"model": "m", "prompt": "x", "stream_options": []}, "stream_options", "object"),
    # embeddings
    (f.embeddings_request, None, None, "JSON object"),
    (f.embeddings_request, {"input": "x"}, "model", "model is required"),
    (f.embeddings_request, {"model": "m"}, "input", "got null"),
    (f.embeddings_request, {"model": "m", "input": []}, "input", "an empty array"),
    (f.embeddings_request, {"model": "m", "input": [1, 2]}, "input", "token arrays"),
    (f.embeddings_request, {"model": "m", "input": [[1, 2]]}, "input", "token arrays"),
    (f.embeddings_request, {"model": "m", "input": ["a", 2]}, "input", "array"),
    (f.embeddings_request, {"model": "m", "input": 5}, "input", "number"),
    (
        f.embeddings_request,
        {"model": "m", "input": "x", "encoding_format": "int8"},
        "encoding_format",
        "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64'].",
    ),
    (f.embeddings_request, {"model": "m", "input": "x", "dimensions": 0}, "dimensions", "at least 1"),
    (f.embeddings_request, {"model": "m", "input": "x", "dimensions": "3"}, "dimensions", "integer"),
]


@pytest.mark.parametrize(("translate", "body", "param", "text"), ERRORS)
def test_bad_input_is_a_400_naming_the_field(translate: Any, body: Any, param: str | None, text: str) -> None:
    with pytest.raises(f.OpenAIRequestError) as info:
        translate(body)
    error = info.value
    assert (error.status, error.param) == (400, param)
    assert text in error.message
    assert isinstance(error, RequestError) and error.field == param
    assert error.body() == {
        "error": {"message": error.message, "type": "invalid_request_error", "param": param, "code": None}
    }
