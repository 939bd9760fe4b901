"""What ChatOllamaPool sends and returns, without any server (sockets are disabled here)."""

from __future__ import annotations

import gc
import socket
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from lc_support import NO_SOCKETS
from pydantic import BaseModel

from gleitzeit_llm import OllamaPoolProvider, RequestError
from gleitzeit_llm.ollama.models import ChatResponse
from gleitzeit_llm.provider import PoolInfo
from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings
from langchain_gleitzeit._utils import convert_messages, generation_info, tool_calls_from_ollama

pytestmark = NO_SOCKETS

URLS = ["http://127.0.0.1:11434", "http://127.0.0.1:11435"]
PNG_B64 = "iVBORw0KGgo="


def llm(**fields: Any) -> ChatOllamaPool:
    return ChatOllamaPool(**{"model": "llama3.2", "instances": URLS, **fields})


def prepare(llm: ChatOllamaPool, stop: list[str] | None = None, **kwargs: Any) -> Any:
    """The call ``llm.invoke("hi", stop=stop, **kwargs)`` would make."""
    return llm._prepare([HumanMessage("hi")], stop, kwargs)


# -- messages -------------------------------------------------------------------------------------


def test_roles_text_tool_calls_and_tool_results() -> None:
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("Weather in Tokyo?"),
        AIMessage(
            "",
            tool_calls=[
                {"name": "get_weather", "args": {"city": "Tokyo"}, "id": "call_1", "type": "tool_call"}
            ],
            additional_kwargs={"reasoning_content": "Need the tool."},
        ),
        ToolMessage("sunny", tool_call_id="call_1"),
        ChatMessage(role="human", content="Thanks"),
    ]
    assert convert_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Tokyo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}
            ],
            "thinking": "Need the tool.",
        },
        # The tool's name comes from the call it answers.
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "tool_name": "get_weather"},
        {"role": "user", "content": "Thanks"},
    ]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": f"data:image/png;base64,{PNG_B64}"},
        {"type": "image", "base64": PNG_B64, "mime_type": "image/png"},
        {"type": "image", "source_type": "base64", "data": PNG_B64, "mime_type": "image/png"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
    ],
)
def test_images_in_every_block_shape(block: dict[str, Any]) -> None:
    message = HumanMessage(content=[{"type": "text", "text": "What is it?"}, block])
    assert convert_messages([message]) == [{"role": "user", "content": "What is it?", "images": [PNG_B64]}]


def test_list_content_skips_tool_use_and_keeps_reasoning_as_thinking() -> None:
    message = AIMessage(
        content=[
            {"type": "reasoning", "reasoning": "Let me add."},
            {"type": "text", "text": "first"},
            {"type": "tool_use", "id": "t", "name": "add", "input": {}},
            "second",
        ]
    )
    assert convert_messages([message]) == [
        {"role": "assistant", "content": "first\nsecond", "thinking": "Let me add."}
    ]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (HumanMessage(content=[{"type": "image_url", "image_url": "https://x/cat.png"}]), "not URLs"),
        (HumanMessage(content=[{"type": "file", "base64": "x", "mime_type": "application/pdf"}]), "'file'"),
        (ChatMessage(role="narrator", content="x"), "narrator"),
    ],
)
def test_what_ollama_cannot_take_is_refused(message: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        convert_messages([message])


def test_callers_messages_are_not_changed() -> None:
    message = AIMessage("x", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "1"}])
    before = message.model_dump()
    convert_messages([message])
    assert message.model_dump() == before


# -- responses ------------------------------------------------------------------------------------


def test_tool_calls_from_ollama_decode_string_encoded_json() -> None:
    calls = tool_calls_from_ollama(
        [
            {
                "function": {
                    "name": "f",
                    "arguments": {"filter": '{"a": 1}', "name": "plain", "functionName": "f"},
                }
            },
            {"id": "call_9", "function": {"name": "g", "arguments": '{"x": [1, 2]}'}},
        ]
    )
    assert calls[0]["args"] == {"filter": {"a": 1}, "name": "plain"} and calls[0]["id"]
    assert calls[1] == {"name": "g", "args": {"x": [1, 2]}, "id": "call_9", "type": "tool_call"}


def test_response_metadata_has_ollamas_fields_and_the_pools() -> None:
    final = ChatResponse.model_validate(
        {
            "model": "llama3.2",
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 10,
            "load_duration": 1,
            "prompt_eval_count": 5,
            "prompt_eval_duration": 2,
            "eval_count": 7,
            "eval_duration": 3,
        }
    )
    pool = PoolInfo("gpu-1", "http://gpu1:11434", 2, True, "llama3.2", "llama3.3:70b")
    info = generation_info(final, pool)
    assert info["model_name"] == "llama3.2" and info["model_provider"] == "ollama"
    assert {k: info[k] for k in ("done_reason", "total_duration", "prompt_eval_count", "eval_count")} == {
        "done_reason": "stop",
        "total_duration": 10,
        "prompt_eval_count": 5,
        "eval_count": 7,
    }
    assert info["pool"]["instance_id"] == "gpu-1" and info["pool"]["instance_url"] == "http://gpu1:11434"
    assert info["pool"]["attempts"] == 2 and info["pool"]["fallback_used"] is True
    assert info["pool"]["requested_model"] == "llama3.3:70b"


# -- requests -------------------------------------------------------------------------------------


def test_fields_become_options_and_hints_stay_out_of_the_request() -> None:
    model = llm(
        temperature=0.2,
        num_ctx=4096,
        num_predict=64,
        seed=7,
        stop=["END"],
        keep_alive="10m",
        reasoning=True,
        instance_tags=["gpu"],
        fallback_model="llama3.2:1b",
    )
    call = prepare(model)
    assert call.model == "llama3.2"
    assert call.params["options"] == {
        "temperature": 0.2,
        "num_ctx": 4096,
        "num_predict": 64,
        "seed": 7,
        "stop": ["END"],
    }
    assert call.params["keep_alive"] == "10m" and call.params["think"] is True
    assert call.params["instance_tags"] == ["gpu"] and call.params["fallback_model"] == "llama3.2:1b"
    for hint in ("instance_tags", "fallback_model", "require_gpu", "max_latency", "load_balancing_strategy"):
        assert hint not in call.params["options"]


def test_per_call_values_override_the_fields() -> None:
    model = llm(temperature=0.2, stop=["END"], require_gpu=True, instance_tags=["gpu"])
    call = prepare(
        model,
        stop=["STOP"],
        model="qwen3",
        temperature=0.9,
        max_tokens=5,
        options={"top_k": 3},
        require_gpu=False,
        instance_tags=["cpu"],
        reasoning=False,
        format="json",
    )
    assert call.model == "qwen3"
    assert call.params["options"] == {"temperature": 0.9, "stop": ["STOP"], "top_k": 3, "num_predict": 5}
    assert "require_gpu" not in call.params and call.params["instance_tags"] == ["cpu"]
    assert call.params["think"] is False and call.params["format"] == "json"


def test_max_tokens_is_num_predict_and_traced() -> None:
    model = llm(max_tokens=10, stop=["x"], temperature=0)
    assert model.num_predict == 10
    assert model._get_ls_params() == {
        "ls_provider": "ollama",
        "ls_model_name": "llama3.2",
        "ls_model_type": "chat",
        "ls_temperature": 0,
        "ls_max_tokens": 10,
        "ls_stop": ["x"],
    }
    assert model._get_ls_params(model="qwen3", temperature=0.5)["ls_model_name"] == "qwen3"


def test_response_format_becomes_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    call = prepare(
        llm(), response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    assert call.params["format"] == schema
    assert prepare(llm(), response_format={"type": "json_object"}).params["format"] == "json"


def test_unknown_keyword_arguments_are_named_before_any_request() -> None:
    with pytest.raises(RequestError, match="'temprature'") as caught:
        prepare(llm(), temprature=0)
    assert isinstance(caught.value, ValueError) and caught.value.field == "temprature"


def test_langchain_cross_provider_kwargs_are_accepted() -> None:
    call = prepare(llm(), strict=True, parallel_tool_calls=False, stream=True)
    assert set(call.params) == set()


def _add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (None, ["_add", "_mul"]),
        ("any", ["_add", "_mul"]),
        ("_mul", ["_mul"]),
        ({"type": "function", "function": {"name": "_add"}}, ["_add"]),
        ("none", None),
    ],
)
def test_tool_choice_narrows_the_tools_sent(choice: Any, sent: list[str] | None) -> None:
    bound = llm().bind_tools([_add, _mul], tool_choice=choice)
    call = prepare(llm(), **bound.kwargs)  # type: ignore[attr-defined]
    tools = call.params.get("tools")
    assert (None if tools is None else [t["function"]["name"] for t in tools]) == sent


def test_tool_choice_naming_no_bound_tool_is_an_error() -> None:
    bound = llm().bind_tools([_add], tool_choice="nope")
    with pytest.raises(RequestError, match="nope"):
        prepare(llm(), **bound.kwargs)  # type: ignore[attr-defined]


class Joke(BaseModel):
    setup: str
    punchline: str


def test_structured_output_binds_the_format() -> None:
    model = llm()
    runnable = model.with_structured_output(Joke, method="json_schema")
    binding = runnable.first  # type: ignore[attr-defined]
    assert binding.kwargs["format"] == Joke.model_json_schema()
    assert model.with_structured_output(Joke, method="json_mode").first.kwargs["format"] == "json"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="Unrecognized method"):
        model.with_structured_output(Joke, method="xml")  # type: ignore[arg-type]


# -- construction ---------------------------------------------------------------------------------


def test_construction_opens_no_socket() -> None:
    with pytest.warns(UserWarning, match="socket"), pytest.raises(RuntimeError, match="socket"):
        socket.socket()  # proves this module really runs with sockets disabled
    model = llm(validate_model_on_init=False)
    assert model.provider.status()["total_instances"] == 2
    model.close()


def test_pool_arguments_are_exclusive() -> None:
    shared = OllamaPoolProvider(instances=URLS)
    try:
        with pytest.raises(ValueError, match="not instances and pool"):
            ChatOllamaPool(model="llama3.2", pool=shared, instances=URLS)
        with pytest.raises(ValueError, match="timeout and max_retries"):
            ChatOllamaPool(model="llama3.2", pool=shared, timeout=5)
        with pytest.raises(ValueError, match="headers per instance"):
            ChatOllamaPool(model="llama3.2", instances=URLS, client_kwargs={"headers": {"a": "b"}})
    finally:
        shared.close_sync()


@pytest.mark.parametrize("name", ["client_kwargs", "sync_client_kwargs", "async_client_kwargs"])
@pytest.mark.parametrize("cls", [ChatOllamaPool, OllamaPoolEmbeddings])
def test_httpx_settings_are_refused_with_where_they_go(cls: type[Any], name: str) -> None:
    """The upstream classes' httpx settings: a hint where headers and timeouts go in a pool (not
    a bare "Extra inputs are not permitted"); the upstream default, an empty dict, is accepted."""
    with pytest.raises(ValueError, match=r"httpx settings; a pool sets headers per instance") as caught:
        cls(model="llama3.2", instances=URLS, **{name: {"headers": {"a": "b"}}})
    assert name in str(caught.value) and "Extra inputs" not in str(caught.value)
    for empty in ({}, None):
        cls(model="llama3.2", instances=URLS, **{name: empty}).close()


def test_base_url_is_a_pool_of_one_and_timeouts_reach_the_pool() -> None:
    model = ChatOllamaPool(model="llama3.2", base_url="http://127.0.0.1:11434", timeout=30, max_retries=1)
    config = model.provider.config
    assert [i.url for i in config.instances] == ["http://127.0.0.1:11434"]
    assert config.timeouts.total == 30 and config.load_balancing.retry_attempts == 1
    model.close()


def test_environment_names_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLEITZEIT_OLLAMA_INSTANCES", "gpu:127.0.0.1:11434,cpu:127.0.0.1:11435")
    model = ChatOllamaPool(model="llama3.2")
    assert [i.id for i in model.provider.config.instances] == ["gpu", "cpu"]
    model.close()


def test_a_built_pool_is_closed_with_its_last_model_and_a_shared_one_never() -> None:
    model = llm()
    provider = model.provider
    copy = model.model_copy(update={"temperature": 0.5})
    assert copy.provider is provider
    del model
    gc.collect()
    assert not provider._closed  # the copy still uses it
    del copy
    gc.collect()
    assert provider._closed

    shared = OllamaPoolProvider(instances=URLS)
    user = ChatOllamaPool(model="llama3.2", pool=shared)
    user.close()
    del user
    gc.collect()
    assert not shared._closed
    shared.close_sync()
