"""The emulator speaks Ollama's wire format: shapes, key order, omitempty, types, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from gleitzeit_llm.testing import EmulatedModel, OllamaEmulator, Reply

JSON_CT = "application/json; charset=utf-8"
CREATED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
LOCAL_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
USER = [{"role": "user", "content": "why is the sky blue?"}]
FINAL_CHAT_KEYS = [
    "model",
    "created_at",
    "message",
    "done",
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
]


@pytest.fixture
def emu() -> Iterator[OllamaEmulator]:
    models = ["llama3.2", "qwen3", "nomic-embed-text", "phi3", EmulatedModel("tiny-embed", embedding_dim=16)]
    with OllamaEmulator(models=models, time_scale=0.001) as emulator:
        yield emulator


@pytest.fixture
def client(emu: OllamaEmulator) -> Iterator[httpx.Client]:
    # Plain http on loopback: verify=False skips loading CA certificates (tens of ms per client).
    with httpx.Client(base_url=emu.url, timeout=10, verify=False) as c:
        yield c


def lines(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines()]


# -- probes --------------------------------------------------------------------------------------


def test_root_says_ollama_is_running_as_plain_text(client: httpx.Client) -> None:
    response = client.get("/")
    assert (response.status_code, response.text) == (200, "Ollama is running")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    head = client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "17"


def test_version_tags_and_ps_have_ollamas_shapes(client: httpx.Client, emu: OllamaEmulator) -> None:
    assert client.get("/api/version").json() == {"version": emu.settings.version}
    assert client.head("/api/version").status_code == 200
    tags = client.get("/api/tags")
    assert tags.headers["content-type"] == JSON_CT
    entry = tags.json()["models"][0]
    assert list(entry) == ["name", "model", "modified_at", "size", "digest", "details"]
    assert entry["name"] == entry["model"] == "llama3.2:latest"
    assert LOCAL_TS.match(entry["modified_at"])
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
    assert entry["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }
    assert client.get("/api/ps").text == '{"models":[]}'


def test_unknown_path_is_404_and_wrong_method_is_405_in_plain_text(client: httpx.Client) -> None:
    missing = client.get("/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    assert missing.headers["content-type"] == "text/plain"
    for method, path in [("GET", "/api/chat"), ("POST", "/api/tags"), ("HEAD", "/api/ps"), ("PUT", "/")]:
        wrong = client.request(method, path)
        assert wrong.status_code == 405, (method, path)
        if method != "HEAD":
            assert wrong.text == "405 method not allowed"


def test_show_reports_details_model_info_and_capabilities(client: httpx.Client) -> None:
    body = client.post("/api/show", json={"model": "qwen3"}).json()
    assert list(body) == [
        "modelfile",
        "parameters",
        "template",
        "details",
        "model_info",
        "capabilities",
        "modified_at",
    ]
    info = body["model_info"]
    assert info["general.architecture"] == "qwen3"
    assert info["qwen3.context_length"] == 40960
    assert list(info) == sorted(info)  # a Go map marshals with sorted keys
    assert body["capabilities"] == ["completion", "tools", "thinking"]
    assert client.post("/api/show", json={"name": "qwen3:latest"}).status_code == 200
    assert client.post("/api/show", json={"model": "x9"}).json() == {"error": "model 'x9' not found"}
    assert client.post("/api/show", json={}).json() == {"error": "model is required"}


# -- chat ----------------------------------------------------------------------------------------


def test_chat_streams_ndjson_by_default_with_metrics_only_on_the_last_line(client: httpx.Client) -> None:
    response = client.post("/api/chat", json={"model": "llama3.2", "messages": USER})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text.endswith("\n")
    parts = lines(response)
    assert len(parts) > 3
    for part in parts[:-1]:
        assert list(part) == ["model", "created_at", "message", "done"]
        assert part["model"] == "llama3.2"  # echoed verbatim, not llama3.2:latest
        assert part["done"] is False
        assert list(part["message"]) == ["role", "content"]
        assert CREATED.match(part["created_at"])
    final = parts[-1]
    assert list(final) == FINAL_CHAT_KEYS
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["done_reason"] == "stop"
    assert final["eval_count"] == len(parts) - 1
    for key in FINAL_CHAT_KEYS[5:]:
        assert isinstance(final[key], int) and final[key] > 0
    assert (
        final["total_duration"]
        >= final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    )


def test_chat_without_streaming_concatenates_the_reply(client: httpx.Client) -> None:
    streamed = lines(client.post("/api/chat", json={"model": "llama3.2", "messages": USER}))
    text = "".join(p["message"]["content"] for p in streamed)
    response = client.post("/api/chat", json={"model": "llama3.2", "messages": USER, "stream": False})
    assert response.headers["content-type"] == JSON_CT
    assert "\n" not in response.text
    body = response.json()
    assert list(body) == FINAL_CHAT_KEYS
    assert body["message"] == {"role": "assistant", "content": text}
    assert len(text.split()) >= 8


def test_replies_are_deterministic_across_instances_and_settable(emu: OllamaEmulator) -> None:
    request = {"model": "llama3.2", "messages": USER, "stream": False}
    with OllamaEmulator(models=["llama3.2"], time_scale=0) as other:
        first = httpx.post(f"{emu.url}/api/chat", json=request).json()["message"]["content"]
        second = httpx.post(f"{other.url}/api/chat", json=request).json()["message"]["content"]
    assert first == second
    emu.responder = lambda req: f"You asked: {req.prompt}" if req.endpoint == "chat" else None
    body = httpx.post(f"{emu.url}/api/chat", json=request).json()
    assert body["message"]["content"] == "You asked: why is the sky blue?"
    generated = httpx.post(
        f"{emu.url}/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
    )
    assert not generated.json()["response"].startswith("You asked")


def test_num_predict_caps_output_with_done_reason_length(client: httpx.Client) -> None:
    body = client.post(
        "/api/chat",
        json={"model": "llama3.2", "messages": USER, "stream": False, "options": {"num_predict": 3}},
    ).json()
    assert (body["done_reason"], body["eval_count"]) == ("length", 3)
    assert len(body["message"]["content"].split()) == 3


def test_stop_sequences_end_the_reply_before_them(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.responder = lambda req: "one two three STOP four five"
    body = client.post(
        "/api/generate",
        json={"model": "llama3.2", "prompt": "count", "stream": False, "options": {"stop": ["STOP"]}},
    ).json()
    assert body["response"] == "one two three "
    assert body["done_reason"] == "stop"


def test_html_characters_are_escaped_like_go(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.responder = lambda req: "a <b> & c"
    raw = client.post("/api/chat", json={"model": "llama3.2", "messages": USER, "stream": False}).text
    assert "\\u003cb\\u003e \\u0026 c" in raw
    assert json.loads(raw)["message"]["content"] == "a <b> & c"


def test_load_and_unload_helpers(client: httpx.Client, emu: OllamaEmulator) -> None:
    loaded = client.post("/api/chat", json={"model": "llama3.2", "messages": []})
    assert list(loaded.json()) == ["model", "created_at", "message", "done", "done_reason"]
    assert loaded.json()["done_reason"] == "load"
    assert emu.loaded_models() == ["llama3.2:latest"]
    unloaded = client.post("/api/chat", json={"model": "llama3.2", "messages": [], "keep_alive": 0}).json()
    assert (unloaded["done_reason"], unloaded["message"]) == ("unload", {"role": "assistant", "content": ""})
    emu.wait_for(lambda: emu.loaded_models() == [])
    generated = client.post("/api/generate", json={"model": "llama3.2"}).json()
    assert list(generated) == ["model", "created_at", "response", "done", "done_reason"]
    assert (generated["response"], generated["done_reason"]) == ("", "load")
    gone = client.post("/api/generate", json={"model": "llama3.2", "keep_alive": 0}).json()
    assert gone["done_reason"] == "unload"


# -- generate ------------------------------------------------------------------------------------


def test_generate_has_ollamas_shape_and_context(client: httpx.Client) -> None:
    parts = lines(client.post("/api/generate", json={"model": "llama3.2", "prompt": "hello"}))
    assert list(parts[0]) == ["model", "created_at", "response", "done"]
    final = parts[-1]
    assert list(final) == [
        "model",
        "created_at",
        "response",
        "done",
        "done_reason",
        "context",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ]
    assert len(final["context"]) == final["prompt_eval_count"] + final["eval_count"]
    raw = client.post(
        "/api/generate", json={"model": "llama3.2", "prompt": "hello", "raw": True, "stream": False}
    )
    assert "context" not in raw.json()


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/chat", b"", 400, "missing request body"),
        ("/api/chat", b"x", 400, "invalid character 'x' looking for beginning of value"),
        ("/api/chat", b'{"model": }', 400, "invalid character '}' looking for beginning of value"),
        ("/api/chat", b'{"model": "llama3.2"', 400, "unexpected EOF"),
        ("/api/chat", b"[]", 400, "json: cannot unmarshal array into Go value of type api.ChatRequest"),
        ("/api/chat", {"messages": USER}, 400, "model is required"),
        ("/api/chat", {"model": "llama9", "messages": USER}, 404, "model 'llama9' not found"),
        (
            "/api/chat",
            {"model": 5, "messages": USER},
            400,
            "json: cannot unmarshal number into Go struct field ChatRequest.model of type string",
        ),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": USER, "stream": "yes"},
            400,
            "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool",
        ),
        (
            "/api/chat",
            {"model": "nomic-embed-text", "messages": USER},
            400,
            '"nomic-embed-text" does not support chat',
        ),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": USER, "think": True},
            400,
            '"llama3.2" does not support thinking',
        ),
        (
            "/api/chat",
            {"model": "qwen3", "messages": USER, "think": "deep"},
            400,
            'invalid think value: "deep" (must be "high", "medium", "low", true, or false)',
        ),
        (
            "/api/chat",
            {"model": "phi3", "messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]},
            400,
            "phi3:latest does not support tools",
        ),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": USER, "keep_alive": True},
            400,
            "Unsupported type: 'bool'",
        ),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": USER, "keep_alive": {}},
            400,
            "Unsupported type: 'map[string]interface {}'",
        ),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": USER, "keep_alive": "soon"},
            400,
            'time: invalid duration "soon"',
        ),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": USER, "keep_alive": "5x"},
            400,
            'time: unknown unit "x" in duration "5x"',
        ),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": USER, "top_logprobs": 21},
            400,
            "top_logprobs must be between 0 and 20",
        ),
        ("/api/generate", {"prompt": "x"}, 404, "model '' not found"),
        (
            "/api/generate",
            {"model": "nomic-embed-text", "prompt": "x"},
            400,
            '"nomic-embed-text" does not support generate',
        ),
        (
            "/api/generate",
            {"model": "llama3.2", "prompt": "x", "raw": True, "system": "s"},
            400,
            "raw mode does not support template, system, or context",
        ),
        ("/api/embed", {"model": "nomic-embed-text", "input": [1]}, 400, "invalid input type"),
        ("/api/embed", {"model": "nomic-embed-text", "input": 3}, 400, "invalid input type"),
        # EmbedHandler: getExistingName keeps an unknown name, the scheduler's GetModel 404s
        (
            "/api/embed",
            {"model": "llama9", "input": "x"},
            404,
            'model "llama9" not found, try pulling it first',
        ),
        ("/api/embeddings", {"prompt": "x"}, 400, "model is required"),
        (
            "/api/embeddings",
            {"model": "x9", "prompt": "x"},
            404,
            'model "x9" not found, try pulling it first',
        ),
    ],
)
def test_invalid_requests_get_ollamas_status_and_message(
    client: httpx.Client, emu: OllamaEmulator, path: str, body: object, status: int, message: str
) -> None:
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert (response.status_code, response.json()) == (status, {"error": message})
    assert response.headers["content-type"] == JSON_CT
    assert emu.loaded_models() == []  # a rejected request never loads a model


def test_keep_alive_accepts_numbers_durations_and_numeric_strings(client: httpx.Client) -> None:
    for keep_alive in [60, 2.5, "10m", "1h30m", "-1", -1, "300"]:
        body = {"model": "llama3.2", "messages": USER, "stream": False, "keep_alive": keep_alive}
        assert client.post("/api/chat", json=body).status_code == 200, keep_alive


# -- think, format, tools ------------------------------------------------------------------------


@pytest.mark.parametrize("think", [True, "low", "high"])
def test_think_streams_thinking_before_content(client: httpx.Client, think: object) -> None:
    parts = lines(client.post("/api/chat", json={"model": "qwen3", "messages": USER, "think": think}))
    kinds = ["thinking" if "thinking" in p["message"] else "content" for p in parts[:-1]]
    assert kinds[0] == "thinking" and kinds[-1] == "content"
    assert kinds == sorted(kinds, reverse=True)  # every thinking chunk comes first
    assert all(p["message"]["content"] == "" for p in parts[:-1] if "thinking" in p["message"])
    whole = client.post(
        "/api/chat", json={"model": "qwen3", "messages": USER, "think": think, "stream": False}
    )
    message = whole.json()["message"]
    assert list(message) == ["role", "content", "thinking"]
    assert message["thinking"].startswith("Okay")
    assert (
        "thinking"
        not in client.post("/api/chat", json={"model": "qwen3", "messages": USER, "stream": False}).json()[
            "message"
        ]
    )


def test_think_on_generate_and_scripted_thinking(client: httpx.Client, emu: OllamaEmulator) -> None:
    emu.responder = lambda req: Reply(content="42", thinking="Let me count.")
    body = client.post(
        "/api/generate", json={"model": "qwen3", "prompt": "x", "think": True, "stream": False}
    ).json()
    assert (body["response"], body["thinking"]) == ("42", "Let me count.")
    assert list(body)[:4] == ["model", "created_at", "response", "thinking"]


def test_format_json_gives_a_json_object(client: httpx.Client) -> None:
    parts = lines(client.post("/api/chat", json={"model": "llama3.2", "messages": USER, "format": "json"}))
    text = "".join(p["message"]["content"] for p in parts)
    assert len(parts) > 3  # streamed in pieces like any content
    assert isinstance(json.loads(text), dict)


SCHEMAS = [
    {
        "$defs": {
            "Address": {
                "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]+$"}},
                "required": ["city"],
                "type": "object",
            },
            "Color": {"enum": ["red", "green"], "type": "string"},
        },
        "properties": {
            "name": {"title": "Name", "type": "string", "minLength": 3, "maxLength": 40},
            "age": {"type": "integer", "minimum": 18, "maximum": 20},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": True},
            "address": {"$ref": "#/$defs/Address"},
            "color": {"$ref": "#/$defs/Color"},
            "nick": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "kind": {"const": "person"},
            "email": {"type": "string", "format": "email"},
            "when": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "parent": {"allOf": [{"$ref": "#/$defs/Address"}]},
            "either": {"oneOf": [{"type": "integer", "multipleOf": 5}, {"type": "null"}]},
            "nothing": {"type": "null"},
            "ratio": {"type": ["number", "null"], "minimum": 2},
        },
        "required": ["name", "age", "score", "ok", "tags", "address", "color", "kind", "email", "parent"],
        "title": "Person",
        "type": "object",
    },
    {
        "definitions": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "type": "array",
        "items": {"$ref": "#/definitions/Item"},
        "minItems": 4,
        "maxItems": 4,
    },
    {"type": "string", "enum": ["yes", "no"]},
    {"type": "object", "additionalProperties": {"type": "integer"}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_format_schema_gives_a_value_valid_for_the_schema(client: httpx.Client, schema: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    body = {"model": "llama3.2", "messages": USER, "format": schema}
    parts = lines(client.post("/api/chat", json=body))
    value = json.loads("".join(p["message"]["content"] for p in parts))
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    whole = client.post("/api/chat", json={**body, "stream": False}).json()
    assert json.loads(whole["message"]["content"]) == value


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_scripted_tool_calls_stream_as_a_chunk_then_text_again(
    client: httpx.Client, emu: OllamaEmulator
) -> None:
    emu.script_tool_calls([{"name": "get_weather", "arguments": {"city": "Tokyo"}}])
    body = {"model": "llama3.2", "messages": USER, "tools": [WEATHER_TOOL]}
    parts = lines(client.post("/api/chat", json=body))
    assert len(parts) == 2
    message = parts[0]["message"]
    assert list(message) == ["role", "content", "tool_calls"]
    (call,) = message["tool_calls"]
    assert list(call) == ["id", "function"]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}
    assert parts[1]["done"] is True and parts[1]["message"] == {"role": "assistant", "content": ""}
    # The script was consumed: the next request answers with text.
    again = client.post("/api/chat", json={**body, "stream": False}).json()["message"]
    assert "tool_calls" not in again and again["content"]


def test_tool_calls_persistent_and_with_arguments_from_the_schema(
    client: httpx.Client, emu: OllamaEmulator
) -> None:
    emu.script_tool_calls(
        ["get_weather", {"name": "get_weather", "arguments": {"city": "Oslo"}}], persistent=True
    )
    body = {"model": "llama3.2", "messages": USER, "tools": [WEATHER_TOOL], "stream": False}
    for _ in range(2):
        calls = client.post("/api/chat", json=body).json()["message"]["tool_calls"]
        assert [c["function"]["index"] for c in calls] == [0, 1]
        assert isinstance(calls[0]["function"]["arguments"]["city"], str)
        assert calls[1]["function"]["arguments"] == {"city": "Oslo"}
    # After a tool result the model answers in words (so agent loops end).
    answered = {**body, "messages": [*USER, {"role": "tool", "content": "11 C", "tool_name": "get_weather"}]}
    assert "tool_calls" not in client.post("/api/chat", json=answered).json()["message"]
    # Without tools, scripts do not apply.
    assert "tool_calls" not in client.post("/api/chat", json={**body, "tools": []}).json()["message"]


# -- embeddings ----------------------------------------------------------------------------------


def test_embed_returns_normalised_deterministic_vectors(client: httpx.Client, emu: OllamaEmulator) -> None:
    response = client.post(
        "/api/embed", json={"model": "nomic-embed-text", "input": ["the sky is blue", "b"]}
    )
    body = response.json()
    assert list(body) == ["model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"]
    assert body["model"] == "nomic-embed-text"
    first, second = body["embeddings"]
    assert len(first) == len(second) == 768
    assert abs(sum(x * x for x in first) - 1) < 1e-5
    again = client.post(
        "/api/embed", json={"model": "nomic-embed-text:latest", "input": "the sky is blue"}
    ).json()
    assert again["embeddings"][0] == first
    assert (
        client.post("/api/embed", json={"model": "tiny-embed", "input": "x"})
        .json()["embeddings"][0]
        .__len__()
        == 16
    )


def test_embed_dimensions_truncate_and_renormalise(client: httpx.Client) -> None:
    full = client.post("/api/embed", json={"model": "nomic-embed-text", "input": "hello"}).json()[
        "embeddings"
    ][0]
    cut = client.post(
        "/api/embed", json={"model": "nomic-embed-text", "input": "hello", "dimensions": 8}
    ).json()
    vector = cut["embeddings"][0]
    assert len(vector) == 8
    assert abs(sum(x * x for x in vector) - 1) < 1e-5
    norm = sum(x * x for x in full[:8]) ** 0.5
    assert all(abs(a - b / norm) < 1e-6 for a, b in zip(vector, full[:8], strict=True))


def test_similar_texts_have_similar_embeddings(client: httpx.Client) -> None:
    texts = ["the blue sky at noon", "the blue sky at dusk", "tax forms for accountants"]
    a, b, c = client.post("/api/embed", json={"model": "nomic-embed-text", "input": texts}).json()[
        "embeddings"
    ]

    def cosine(x: list[float], y: list[float]) -> float:
        return sum(p * q for p, q in zip(x, y, strict=True))

    assert cosine(a, b) > cosine(a, c) + 0.2


def test_empty_embed_input_loads_the_model(client: httpx.Client, emu: OllamaEmulator) -> None:
    for empty in ["", []]:
        response = client.post("/api/embed", json={"model": "nomic-embed-text", "input": empty})
        assert response.text == '{"model":"nomic-embed-text","embeddings":[]}'
    assert emu.loaded_models() == ["nomic-embed-text:latest"]


def test_legacy_embeddings_endpoint(client: httpx.Client) -> None:
    body = client.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": "hello"}).json()
    assert list(body) == ["embedding"] and len(body["embedding"]) == 768
    assert client.post("/api/embeddings", json={"model": "nomic-embed-text"}).json() == {"embedding": []}


def test_embed_context_overflow_without_truncation(client: httpx.Client) -> None:
    long = "word " * 4000
    body = {"model": "nomic-embed-text", "input": long, "truncate": False}
    response = client.post("/api/embed", json=body)
    assert response.json() == {"error": "the input length exceeds the context length"}
    assert client.post("/api/embed", json={**body, "truncate": True}).status_code == 200
