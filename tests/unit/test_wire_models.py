# ruff: noqa: E501 - wire examples are kept verbatim, one JSON object per line
"""Requests serialise as Ollama expects and the reference's response examples parse verbatim.

The JSON texts below are copied from ``ollama-api.md`` (the wire reference) unchanged.
"""

from __future__ import annotations

import json
from datetime import timedelta, timezone

import pytest
from pydantic import BaseModel

from gleitzeit_llm.errors import RequestError
from gleitzeit_llm.ollama import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    ListResponse,
    Message,
    ProcessResponse,
    ShowRequest,
    ShowResponse,
    VersionResponse,
    aggregate_chat,
    aggregate_generate,
)

# ---------------------------------------------------------------------------------------------
# Reference examples (ollama-api.md), verbatim

CHAT_REQUEST = """{
  "model": "llama3.2",
  "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "why is the sky blue?"}
  ],
  "stream": true,
  "options": {"temperature": 0, "num_predict": 128},
  "keep_alive": "10m"
}"""

CHAT_STREAM = """\
{"model":"llama3.2","created_at":"2025-10-26T17:21:21.196249Z","message":{"role":"assistant","content":"The"},"done":false}
{"model":"llama3.2","created_at":"2025-10-26T17:21:21.207235Z","message":{"role":"assistant","content":" sky"},"done":false}
{"model":"llama3.2","created_at":"2025-10-26T17:21:21.219166Z","message":{"role":"assistant","content":" appears"},"done":false}
{"model":"llama3.2","created_at":"2025-10-26T17:21:21.893120Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}
"""

THINKING_STREAM = """\
{"model":"qwen3","created_at":"2025-10-26T17:30:00.1Z","message":{"role":"assistant","content":"","thinking":"Okay, the user"},"done":false}
{"model":"qwen3","created_at":"2025-10-26T17:30:00.2Z","message":{"role":"assistant","content":"","thinking":" asks about"},"done":false}
{"model":"qwen3","created_at":"2025-10-26T17:30:01.9Z","message":{"role":"assistant","content":"Rayleigh"},"done":false}
"""

TOOL_STREAM = """\
{"model":"llama3.2","created_at":"2025-07-07T20:22:19.184789Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_k3j9x2ab","function":{"index":0,"name":"get_weather","arguments":{"city":"Tokyo"}}}]},"done":false}
{"model":"llama3.2","created_at":"2025-07-07T20:22:19.19314Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":182242375,"load_duration":41295167,"prompt_eval_count":169,"prompt_eval_duration":24573166,"eval_count":15,"eval_duration":115959084}
"""

CHAT_FINAL = """{
  "model": "llama3.2",
  "created_at": "2023-12-12T14:13:43.416799Z",
  "message": {"role": "assistant", "content": "Hello! How are you today?"},
  "done": true,
  "done_reason": "stop",
  "total_duration": 5191566416,
  "load_duration": 2154458,
  "prompt_eval_count": 26,
  "prompt_eval_duration": 383809000,
  "eval_count": 298,
  "eval_duration": 4799921000
}"""

CHAT_FINAL_TOOLS = """{
  "model": "llama3.2",
  "created_at": "2025-07-07T20:32:53.844124Z",
  "message": {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]
  },
  "done_reason": "stop",
  "done": true,
  "total_duration": 3244883583,
  "load_duration": 2969184542,
  "prompt_eval_count": 169,
  "prompt_eval_duration": 141656333,
  "eval_count": 18,
  "eval_duration": 133293625
}"""

CHAT_LOAD = (
    '{"model":"llama3.2","created_at":"2024-09-12T21:17:29.110811Z",'
    '"message":{"role":"assistant","content":""},"done_reason":"load","done":true}'
)

GENERATE_STREAM = """\
{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","response":"The","done":false}
{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","response":"","done":true,"done_reason":"stop","context":[1,2,3],"total_duration":10706818083,"load_duration":6338219291,"prompt_eval_count":26,"prompt_eval_duration":130079000,"eval_count":259,"eval_duration":4232710000}
"""

GENERATE_FINAL = """{
  "model": "llama3.2",
  "created_at": "2023-08-04T19:22:45.499127Z",
  "response": "The sky is blue because it is the color of the sky.",
  "done": true,
  "done_reason": "stop",
  "context": [1, 2, 3],
  "total_duration": 5043500667,
  "load_duration": 5025959,
  "prompt_eval_count": 26,
  "prompt_eval_duration": 325953000,
  "eval_count": 290,
  "eval_duration": 4709213000
}"""

EMBED_FINAL = """{
  "model": "all-minilm",
  "embeddings": [[0.010071029, -0.0017594862, 0.05007221, 0.04692972, 0.054916814]],
  "total_duration": 14143917,
  "load_duration": 1019500,
  "prompt_eval_count": 8
}"""

TAGS = """{
  "models": [
    {
      "name": "llama3.2:latest",
      "model": "llama3.2:latest",
      "modified_at": "2025-05-04T17:37:44.706015396-07:00",
      "size": 2019393189,
      "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
      "details": {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M"
      }
    }
  ]
}"""

PS = """{
  "models": [
    {
      "name": "mistral:latest",
      "model": "mistral:latest",
      "size": 5137025024,
      "digest": "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8",
      "details": {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "7.2B",
        "quantization_level": "Q4_0"
      },
      "expires_at": "2024-06-04T14:38:31.83753-07:00",
      "size_vram": 5137025024,
      "context_length": 4096
    }
  ]
}"""

SHOW = """{
  "modelfile": "# Modelfile generated by \\"ollama show\\"\\nFROM /root/.ollama/models/blobs/sha256:…\\nTEMPLATE …",
  "parameters": "num_keep                       24\\nstop                           \\"<|eot_id|>\\"",
  "template": "{{ if .System }}<|start_header_id|>system<|end_header_id|>…",
  "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"], "parameter_size": "8.0B", "quantization_level": "Q4_0"},
  "model_info": {
    "general.architecture": "llama",
    "general.parameter_count": 8030261248,
    "llama.context_length": 8192,
    "llama.embedding_length": 4096,
    "tokenizer.ggml.tokens": []
  },
  "capabilities": ["completion", "vision"],
  "modified_at": "2025-05-04T17:37:44.706015396-07:00"
}"""

VERSION = '{"version":"0.5.1"}'


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


# ---------------------------------------------------------------------------------------------
# Requests: serialisation


def test_the_reference_chat_request_round_trips_exactly() -> None:
    wire = json.loads(CHAT_REQUEST)
    assert ChatRequest.model_validate(wire).to_wire() == wire


def test_to_wire_drops_none_and_always_sets_stream() -> None:
    request = ChatRequest(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert request.to_wire() == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }
    assert request.to_wire(stream=True)["stream"] is True
    assert ChatRequest(model="m", stream=True).to_wire()["stream"] is True
    assert ChatRequest(model="m", stream=True).to_wire(stream=False)["stream"] is False
    assert GenerateRequest(model="m", prompt="p").to_wire() == {"model": "m", "prompt": "p", "stream": False}


def test_embed_and_show_requests_carry_no_stream_field() -> None:
    assert EmbedRequest(model="all-minilm", input=["a", "b"]).to_wire() == {
        "model": "all-minilm",
        "input": ["a", "b"],
    }
    assert ShowRequest(model="llava").to_wire() == {"model": "llava"}


def test_options_pass_through_unchanged_except_none_values() -> None:
    options = {"temperature": 0, "num_ctx": 8192, "stop": ["\n\n"], "seed": None, "some_new_option": 1.5}
    wire = ChatRequest(model="m", options=options).to_wire()
    assert wire["options"] == {"temperature": 0, "num_ctx": 8192, "stop": ["\n\n"], "some_new_option": 1.5}
    assert options["seed"] is None  # the caller's dict is not mutated


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("5m", "5m"),
        ("1h30m", "1h30m"),
        ("1.5h", "1.5h"),
        (300, 300),
        (0, 0),
        (-1, -1),
        (2.5, 2.5),
        ("-1", -1),
        ("0", 0),
        ("30", 30),
        (timedelta(minutes=10), 600.0),
    ],
)
def test_keep_alive_accepts_seconds_and_durations(given: object, sent: object) -> None:
    assert ChatRequest(model="m", keep_alive=given).to_wire()["keep_alive"] == sent
    assert EmbedRequest(model="m", input="x", keep_alive=given).to_wire()["keep_alive"] == sent


@pytest.mark.parametrize("bad", [True, "5 minutes", "forever", [], {"m": 5}])
def test_keep_alive_rejects_what_ollama_would_answer_400(bad: object) -> None:
    with pytest.raises(RequestError) as info:
        ChatRequest(model="m", keep_alive=bad)
    assert info.value.field == "keep_alive"


@pytest.mark.parametrize("think", [True, False, "low", "medium", "high", "max"])
def test_think_accepts_bool_and_levels(think: object) -> None:
    assert ChatRequest(model="m", think=think).to_wire()["think"] == think
    assert GenerateRequest(model="m", think=think).to_wire()["think"] == think


@pytest.mark.parametrize("bad", ["extreme", "true", 1, 0.5])
def test_think_rejects_other_values(bad: object) -> None:
    with pytest.raises(RequestError) as info:
        ChatRequest(model="m", think=bad)
    assert info.value.field == "think"


def test_format_is_json_or_a_schema() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    assert ChatRequest(model="m", format="json").to_wire()["format"] == "json"
    assert ChatRequest(model="m", format=schema).to_wire()["format"] == schema
    assert "format" not in ChatRequest(model="m", format="").to_wire()

    class Person(BaseModel):
        age: int

    assert GenerateRequest(model="m", format=Person).to_wire()["format"]["required"] == ["age"]
    with pytest.raises(RequestError) as info:
        ChatRequest(model="m", format="xml")
    assert info.value.field == "format"


def test_tools_and_tool_messages_pass_through() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    messages = [
        {"role": "user", "content": "Weather in Tokyo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}],
        },
        {"role": "tool", "content": "11 degrees celsius", "tool_name": "get_weather"},
    ]
    wire = ChatRequest(model="llama3.2", messages=messages, tools=[tool]).to_wire()
    assert wire["tools"] == [tool]
    assert wire["messages"] == messages


def test_openai_style_string_arguments_become_an_object() -> None:
    message = Message(
        role="assistant",
        tool_calls=[{"id": "call_1", "function": {"name": "f", "arguments": '{"city": "Tokyo"}'}}],
    )
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.arguments == {"city": "Tokyo"}


def test_image_bytes_are_sent_as_base64() -> None:
    wire = ChatRequest(
        model="llava", messages=[{"role": "user", "content": "what?", "images": [b"\x89PNG"]}]
    ).to_wire()
    assert wire["messages"][0]["images"] == ["iVBORw=="]
    assert GenerateRequest(model="llava", images=["aGk=", b"hi"]).to_wire()["images"] == ["aGk=", "aGk="]


def test_generate_request_fields() -> None:
    request = GenerateRequest(
        model="llama3.2",
        prompt="Why?",
        suffix="end",
        system="Be brief.",
        template="{{ .Prompt }}",
        context=[1, 2, 3],
        raw=True,
        truncate=False,
        shift=False,
        logprobs=True,
        top_logprobs=5,
    )
    assert request.to_wire(stream=True) == {
        "model": "llama3.2",
        "prompt": "Why?",
        "suffix": "end",
        "system": "Be brief.",
        "template": "{{ .Prompt }}",
        "context": [1, 2, 3],
        "raw": True,
        "truncate": False,
        "shift": False,
        "logprobs": True,
        "top_logprobs": 5,
        "stream": True,
    }


def test_the_model_name_is_sent_verbatim() -> None:
    assert ChatRequest(model="llama3.2").to_wire()["model"] == "llama3.2"


# ---------------------------------------------------------------------------------------------
# Requests: the caller's mistakes


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": ""}, "model"),
        ({"model": "   "}, "model"),
        ({"model": None}, "model"),
        ({}, "model"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "hi", "images": "aGk="}]},
            "messages[0].images",
        ),
        ({"model": "m", "temperature": 0.2}, "temperature"),
        ({"model": "m", "max_tokens": 10}, "max_tokens"),
        ({"model": "m", "load_balancing_strategy": "round_robin"}, "load_balancing_strategy"),
        ({"model": "m", "top_logprobs": 21}, "top_logprobs"),
        ({"model": "m", "options": "fast"}, "options"),
        ({"model": "m", "tools": {"type": "function"}}, "tools"),
    ],
)
def test_invalid_chat_requests_raise_request_error_naming_the_field(fields: dict, field: str) -> None:
    with pytest.raises(RequestError) as info:
        ChatRequest.model_validate(fields)
    assert info.value.field == field
    assert field in str(info.value)
    assert info.value.instance is None and info.value.status is None


def test_misplaced_options_get_a_hint() -> None:
    with pytest.raises(RequestError, match=r"options=\{'temperature'"):
        ChatRequest(model="m", temperature=0.2)
    with pytest.raises(RequestError, match="num_predict"):
        ChatRequest(model="m", max_tokens=10)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": "e", "input": ["a", 1]}, "input"),
        ({"model": "e", "input": 42}, "input"),
        ({"model": "e", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "", "input": "a"}, "model"),
    ],
)
def test_invalid_embed_requests(fields: dict, field: str) -> None:
    with pytest.raises(RequestError) as info:
        EmbedRequest(**fields)
    assert info.value.field == field


def test_coerce_accepts_a_request_or_a_mapping_only() -> None:
    request = ChatRequest(model="m")
    assert ChatRequest.coerce(request) is request
    assert ChatRequest.coerce({"model": "m"}) == request
    with pytest.raises(RequestError):
        ChatRequest.coerce("m")


def test_a_message_built_directly_reports_request_error() -> None:
    with pytest.raises(RequestError) as info:
        Message(role="narrator", content="x")
    assert info.value.field == "role"


# ---------------------------------------------------------------------------------------------
# Responses: the reference's examples


def test_chat_stream_chunks_parse() -> None:
    chunks = [ChatResponse.model_validate(obj) for obj in lines(CHAT_STREAM)]
    assert [c.message.content for c in chunks] == ["The", " sky", " appears", ""]
    assert [c.done for c in chunks] == [False, False, False, True]
    assert chunks[0].model == "llama3.2" and chunks[0].created_at == "2025-10-26T17:21:21.196249Z"
    assert chunks[0].done_reason is None and chunks[0].total_duration is None
    final = chunks[-1]
    assert final.done_reason == "stop"
    assert (final.total_duration, final.load_duration, final.prompt_eval_count) == (4883583458, 1334875, 26)
    assert (final.prompt_eval_duration, final.eval_count, final.eval_duration) == (342546000, 282, 4535599000)


def test_thinking_chunks_parse() -> None:
    chunks = [ChatResponse.model_validate(obj) for obj in lines(THINKING_STREAM)]
    assert [c.message.thinking for c in chunks] == ["Okay, the user", " asks about", None]
    assert chunks[2].message.content == "Rayleigh"


def test_tool_call_chunks_parse() -> None:
    first, final = (ChatResponse.model_validate(obj) for obj in lines(TOOL_STREAM))
    assert first.message.tool_calls is not None
    call = first.message.tool_calls[0]
    assert (call.id, call.function.index, call.function.name) == ("call_k3j9x2ab", 0, "get_weather")
    assert call.function.arguments == {"city": "Tokyo"}
    assert final.done and final.eval_count == 15


def test_non_streamed_chat_responses_parse() -> None:
    answer = ChatResponse.model_validate_json(CHAT_FINAL)
    assert answer.message.role == "assistant"
    assert answer.message.content == "Hello! How are you today?"
    assert answer.done and answer.done_reason == "stop" and answer.eval_count == 298

    with_tools = ChatResponse.model_validate_json(CHAT_FINAL_TOOLS)
    assert with_tools.message.tool_calls is not None
    call = with_tools.message.tool_calls[0]
    assert (call.id, call.function.index, call.function.name) == (None, None, "get_weather")
    assert with_tools.load_duration == 2969184542

    loaded = ChatResponse.model_validate_json(CHAT_LOAD)
    assert loaded.done_reason == "load" and loaded.message.content == ""


def test_generate_responses_parse() -> None:
    first, final = (GenerateResponse.model_validate(obj) for obj in lines(GENERATE_STREAM))
    assert first.response == "The" and first.created_at == "2023-08-04T08:52:19.385406455-07:00"
    assert final.context == [1, 2, 3] and final.eval_count == 259
    answer = GenerateResponse.model_validate_json(GENERATE_FINAL)
    assert answer.response == "The sky is blue because it is the color of the sky."
    assert answer.context == [1, 2, 3] and answer.done_reason == "stop"


def test_embed_response_parses() -> None:
    answer = EmbedResponse.model_validate_json(EMBED_FINAL)
    assert answer.model == "all-minilm"
    assert answer.embeddings == [[0.010071029, -0.0017594862, 0.05007221, 0.04692972, 0.054916814]]
    assert (answer.total_duration, answer.load_duration, answer.prompt_eval_count) == (14143917, 1019500, 8)


def test_tags_response_parses() -> None:
    tags = ListResponse.model_validate_json(TAGS)
    (model,) = tags.models
    assert model.name == model.model == "llama3.2:latest"
    assert model.size == 2019393189 and model.digest is not None and model.digest.startswith("a80c4f17")
    assert model.details is not None and model.details.quantization_level == "Q4_K_M"
    assert model.details.families == ["llama"] and model.details.parent_model == ""
    assert model.modified_at is not None and model.modified_at.utcoffset() == timedelta(hours=-7)
    assert tags.has_model("llama3.2") and not tags.has_model("llama3.2:1b")
    assert ListResponse.model_validate_json('{"models":[]}').models == []


def test_ps_response_parses() -> None:
    ps = ProcessResponse.model_validate_json(PS)
    (running,) = ps.models
    assert running.model == "mistral:latest"
    assert running.size == running.size_vram == 5137025024
    assert running.context_length == 4096
    assert running.expires_at is not None
    assert running.expires_at.astimezone(timezone.utc).hour == 21
    assert ps.has_model("mistral")


def test_show_and_version_responses_parse() -> None:
    show = ShowResponse.model_validate_json(SHOW)
    assert show.capabilities == ["completion", "vision"]
    assert show.model_info is not None and show.model_info["general.parameter_count"] == 8030261248
    assert show.context_length == 8192
    assert show.details is not None and show.details.parameter_size == "8.0B"
    assert show.modelfile is not None and show.modelfile.startswith('# Modelfile generated by "ollama show"')
    assert VersionResponse.model_validate_json(VERSION).version == "0.5.1"


def test_responses_keep_fields_they_do_not_know() -> None:
    final = dict(lines(CHAT_STREAM)[-1], prompt_eval_cached_count=20)
    final["message"] = dict(final["message"], reasoning_tokens=3)
    chunk = ChatResponse.model_validate(final)
    assert chunk.model_extra == {"prompt_eval_cached_count": 20}
    assert chunk.message.model_extra == {"reasoning_tokens": 3}
    tags = json.loads(TAGS)
    tags["models"][0]["capabilities"] = ["completion", "tools"]
    assert ListResponse.model_validate(tags).models[0].model_extra == {
        "capabilities": ["completion", "tools"]
    }


def test_old_servers_that_send_only_name_still_parse() -> None:
    tags = ListResponse.model_validate({"models": [{"name": "llama3.2:latest"}]})
    assert tags.models[0].model == "llama3.2:latest"


# ---------------------------------------------------------------------------------------------
# Timings


def test_queue_time_and_tokens_per_second_from_a_final_response() -> None:
    answer = ChatResponse.model_validate_json(CHAT_FINAL)
    # 5191566416 - 2154458 - 383809000 - 4799921000 = 5681958 ns
    assert answer.queue_time == pytest.approx(0.005681958)
    assert answer.tokens_per_second == pytest.approx(298 / 4.799921)
    assert answer.prompt_tokens_per_second == pytest.approx(26 / 0.383809)
    assert answer.load_time == pytest.approx(0.002154458)


def test_queue_time_is_never_negative_and_missing_metrics_are_none() -> None:
    skewed = ChatResponse.model_validate_json(CHAT_FINAL).model_copy(update={"total_duration": 1})
    assert skewed.queue_time == 0.0
    chunk = ChatResponse.model_validate(lines(CHAT_STREAM)[0])
    assert chunk.queue_time is None and chunk.tokens_per_second is None and chunk.load_time is None
    # omitempty: a fully cached prompt may leave prompt_eval_* out; they count as zero
    final = lines(CHAT_STREAM)[-1]
    del final["prompt_eval_duration"], final["prompt_eval_count"]
    partial = ChatResponse.model_validate(final)
    assert partial.queue_time == pytest.approx((4883583458 - 1334875 - 4535599000) / 1e9)
    assert partial.prompt_tokens_per_second is None


def test_embed_response_has_load_and_queue_time() -> None:
    answer = EmbedResponse.model_validate_json(EMBED_FINAL)
    assert answer.load_time == pytest.approx(0.0010195)
    assert answer.queue_time == pytest.approx((14143917 - 1019500) / 1e9)


# ---------------------------------------------------------------------------------------------
# Aggregation: a folded stream equals the non-streamed answer


def _as_stream(final: dict, pieces: list[str], key: str) -> list[dict]:
    """The chunks a server would stream for ``final`` (content split into ``pieces``)."""
    chunks = []
    for piece in pieces:
        if key == "message":
            chunks.append(
                {
                    "model": final["model"],
                    "created_at": "2023-12-12T14:13:43.1Z",
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
            )
        else:
            chunks.append({"model": final["model"], "created_at": "x", "response": piece, "done": False})
    last = dict(final)
    if key == "message":
        last["message"] = {"role": "assistant", "content": ""}
    else:
        last["response"] = ""
    chunks.append(last)
    return chunks


def test_aggregate_chat_equals_the_non_streamed_answer() -> None:
    final = json.loads(CHAT_FINAL)
    stream = _as_stream(final, ["Hello", "!", " How", " are", " you", " today", "?"], "message")
    folded = aggregate_chat(ChatResponse.model_validate(c) for c in stream)
    assert folded == ChatResponse.model_validate(final)


def test_aggregate_chat_keeps_a_last_piece_of_content_on_the_final_chunk() -> None:
    final = json.loads(CHAT_FINAL)
    stream = _as_stream(final, ["Hello! How are you"], "message")
    stream[-1]["message"]["content"] = " today?"
    assert aggregate_chat(ChatResponse.model_validate(c) for c in stream).message.content == (
        "Hello! How are you today?"
    )


def test_aggregate_chat_collects_thinking_and_tool_calls() -> None:
    thinking = [ChatResponse.model_validate(c) for c in lines(THINKING_STREAM)]
    tools = [ChatResponse.model_validate(c) for c in lines(TOOL_STREAM)]
    folded = aggregate_chat([*thinking, *tools])
    assert folded.message.thinking == "Okay, the user asks about"
    assert folded.message.content == "Rayleigh"
    assert folded.message.tool_calls is not None
    assert [t.function.name for t in folded.message.tool_calls] == ["get_weather"]
    assert folded.done and folded.eval_count == 15  # metrics from the final chunk


def test_aggregate_chat_of_the_reference_stream() -> None:
    folded = aggregate_chat(ChatResponse.model_validate(c) for c in lines(CHAT_STREAM))
    assert folded.message.content == "The sky appears"
    assert folded.message.thinking is None and folded.message.tool_calls is None
    assert folded.total_duration == 4883583458 and folded.created_at == "2025-10-26T17:21:21.893120Z"


def test_aggregate_of_an_unfinished_stream_is_not_done() -> None:
    folded = aggregate_chat(ChatResponse.model_validate(c) for c in lines(CHAT_STREAM)[:2])
    assert folded.message.content == "The sky" and folded.done is False


def test_aggregate_generate_equals_the_non_streamed_answer() -> None:
    final = json.loads(GENERATE_FINAL)
    stream = _as_stream(final, ["The sky", " is blue because", " it is the color of the sky."], "response")
    folded = aggregate_generate(GenerateResponse.model_validate(c) for c in stream)
    assert folded == GenerateResponse.model_validate(final)


def test_aggregating_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        aggregate_chat([])
    with pytest.raises(ValueError):
        aggregate_generate([])


def test_aggregation_keeps_every_chunks_logprobs() -> None:
    from gleitzeit_llm.ollama.models import ChatResponse, aggregate_chat

    chunks = [
        ChatResponse.model_validate(
            {
                "model": "m",
                "message": {"role": "assistant", "content": t},
                "done": done,
                "logprobs": [{"token": t}],
            }
        )
        for t, done in (("a", False), ("b", False), ("", True))
    ]
    assert [p["token"] for p in aggregate_chat(chunks).logprobs] == ["a", "b", ""]
