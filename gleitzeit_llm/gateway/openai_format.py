"""OpenAI's API in terms of Ollama's native one: pure translation, no I/O, no web framework.

The gateway's ``/v1`` routes turn an OpenAI request body into an Ollama body
(:func:`chat_request`, :func:`completion_request`, :func:`embeddings_request`), send that through
the pool like any native call, and turn Ollama's answer back (:func:`chat_response`,
:class:`ChatStream`, :func:`completion_response`, :class:`CompletionStream`,
:func:`embeddings_response`, :func:`models_list`). The mapping copies Ollama's own compatibility
layer (``openai/openai.go`` and ``middleware/openai.go`` of ollama/ollama), so a client sees what a
real Ollama's ``/v1`` would show it. Where this module differs, the function's docstring says so
and why: ``tool_choice`` is honoured where the tools sent can express it, ``n``/``best_of``/``echo``
and malformed fields are refused instead of ignored, ``max_completion_tokens`` is read, every
finish reason is one the SDKs' types allow, embeddings never come back as an empty object, and a
failure after the first streamed chunk is an SSE error event.

Bad input raises :class:`OpenAIRequestError` (HTTP 400) naming the field, before any instance is
picked; :func:`error_body` gives OpenAI's error shape for it and for every other failure.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gleitzeit_llm.errors import RequestError
from gleitzeit_llm.ollama.names import model_key, parse_model_name

__all__ = [
    "ChatStream",
    "CompletionStream",
    "OpenAIRequestError",
    "chat_chunk",
    "chat_finish_chunk",
    "chat_request",
    "chat_response",
    "chat_usage_chunk",
    "completion_chunk",
    "completion_request",
    "completion_response",
    "completion_usage_chunk",
    "embeddings_request",
    "embeddings_response",
    "error_body",
    "error_type",
    "include_usage",
    "model_entry",
    "models_list",
    "new_id",
    "sse",
    "sse_done",
    "sse_error",
]

#: What Ollama's /v1 answers in ``system_fingerprint``; some clients log it.
SYSTEM_FINGERPRINT = "fp_ollama"

# Image data URLs Ollama's decodeImageURL accepts; "data:;base64," is its bare-base64 form.
_IMAGE_PREFIXES = (
    "data:image/jpeg;base64,",
    "data:image/jpg;base64,",
    "data:image/png;base64,",
    "data:image/webp;base64,",
    "data:;base64,",
)

# reasoning_effort -> Ollama's think (openai.go thinkFromReasoningEffort): OpenAI's scale runs past
# both ends of Ollama's, so the outer tiers clamp instead of failing.
_THINK = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIRequestError(RequestError):
    """An OpenAI request body the gateway cannot translate: the caller's mistake (HTTP 400).

    ``param`` names the field as OpenAI does (``messages[1].content``), ``message`` says what is
    wrong and what is accepted.
    """

    def __init__(self, message: str, param: str | None = None, *, status: int = 400) -> None:
        super().__init__(message, field=param, status=status)
        self.message = message
        self.param = param
        self.status = status

    def body(self) -> dict[str, Any]:
        """This error in OpenAI's shape (:func:`error_body`)."""
        return error_body(self.message, error_type(self.status), self.param)


# --- errors and framing ---------------------------------------------------------------------------


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status (Ollama's NewError: 400 invalid_request_error,
    404 not_found_error, otherwise api_error; plus the types OpenAI uses for 401/403/413/429)."""
    return _ERROR_TYPES.get(status, "api_error")


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON: ``data: {...}\\n\\n``.

    JSON escapes newlines inside strings, so the event is always one ``data:`` line.
    """
    return b"data: " + _dumps(obj) + b"\n\n"


_DONE = b"data: [DONE]\n\n"


def sse_done() -> bytes:
    """The event that ends an OpenAI stream: ``data: [DONE]``."""
    return _DONE


def sse_error(message: str, type: str = "api_error", code: str | None = None) -> bytes:
    """The event for a failure after the first chunk: ``data: {"error": {...}}``.

    A plain ``data:`` event, not ``event: error``: the ``openai`` SDKs raise ``APIError`` for a
    data event whose JSON has ``error`` and so do most hand-written clients, while a named event
    is skipped by clients that only read data. No ``[DONE]`` follows, so a client that waits for
    it knows the stream did not finish.
    """
    return sse(error_body(message, type, None, code))


def new_id(prefix: str = "chatcmpl") -> str:
    """A fresh response id, ``chatcmpl-...`` for chat and ``cmpl-...`` for completions (Ollama
    uses a random number below 999; this one does not repeat within a busy minute)."""
    return f"{prefix}-{secrets.token_hex(12)}"


# --- request validation helpers ---------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise OpenAIRequestError(f"the request body must be a JSON object, got {_type_name(body)}")
    return body


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        got = "missing" if model is None else f"got {_type_name(model)} {model!r}"
        raise OpenAIRequestError(f"model is required: a model name string ({got})", "model")
    return model


def _number(body: Mapping[str, Any], key: str) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OpenAIRequestError(f"{key} must be a number, got {_type_name(value)}", key)
    return value


def _integer(body: Mapping[str, Any], key: str, *, minimum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpenAIRequestError(f"{key} must be an integer, got {_type_name(value)}", key)
    if minimum is not None and value < minimum:
        raise OpenAIRequestError(f"{key} must be at least {minimum}, got {value}", key)
    return value


def _flag(body: Mapping[str, Any], key: str, param: str | None = None) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        param = param or key
        raise OpenAIRequestError(f"{param} must be true or false, got {_type_name(value)}", param)
    return value


def _single_choice(body: Mapping[str, Any]) -> None:
    # Ollama ignores n and answers one choice; a client asking for more would silently get one.
    n = _integer(body, "n")
    if n is not None and n != 1:
        raise OpenAIRequestError(f"n must be 1: Ollama answers one choice per request, got {n}", "n")


def include_usage(body: Mapping[str, Any]) -> bool:
    """Whether a streamed answer ends with a usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, Mapping):
        raise OpenAIRequestError(
            f"stream_options must be an object like {{'include_usage': true}}, got {_type_name(options)}",
            "stream_options",
        )
    return _flag(options, "include_usage", "stream_options.include_usage")


def _stop(body: Mapping[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise OpenAIRequestError("stop must be a string or an array of strings", "stop")


def _options(body: Mapping[str, Any], *, chat: bool) -> dict[str, Any]:
    """Ollama ``options`` in openai.go's order; temperature and top_p default to 1.0 as OpenAI's
    do (Ollama's /v1 sends them explicitly, overriding the Modelfile's defaults)."""
    options: dict[str, Any] = {}
    stop = _stop(body)
    if stop is not None:
        options["stop"] = stop
    # max_completion_tokens is OpenAI's newer name (max_tokens is deprecated for chat); Ollama's
    # /v1 only reads max_tokens, here the newer name wins when both are sent.
    limit = _integer(body, "max_completion_tokens") if chat else None
    if limit is None:
        limit = _integer(body, "max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    temperature = _number(body, "temperature")
    options["temperature"] = 1.0 if temperature is None else temperature
    seed = _integer(body, "seed")
    if seed is not None:
        options["seed"] = seed
    for key in ("frequency_penalty", "presence_penalty"):
        value = _number(body, key)
        if value is not None:
            options[key] = value
        elif not chat:
            options[key] = 0.0  # openai.go's completion request always sends both
    top_p = _number(body, "top_p")
    options["top_p"] = 1.0 if top_p is None or (not chat and top_p == 0) else top_p
    return options


# --- chat request ---------------------------------------------------------------------------------------


def _image(url: Any, param: str) -> str:
    """The base64 payload of an image data URL (Ollama's decodeImageURL); remote URLs refused."""
    if not isinstance(url, str):
        raise OpenAIRequestError(f"{param} must be a data URL string, got {_type_name(url)}", param)
    if url.startswith(("http://", "https://")):
        raise OpenAIRequestError(
            "image URLs are not currently supported, please use base64 encoded data instead", param
        )
    for prefix in _IMAGE_PREFIXES:
        if url.startswith(prefix):
            data = url[len(prefix) :]
            break
    else:
        raise OpenAIRequestError(
            "invalid image input: expected data:image/(jpeg|jpg|png|webp);base64,... (or data:;base64,...)",
            param,
        )
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise OpenAIRequestError("invalid image input: the data is not valid base64", param) from None
    return data


def _part(part: Any, role: str, param: str) -> dict[str, Any]:
    """One content part as its own Ollama message, as openai.go splits them."""
    if not isinstance(part, Mapping):
        raise OpenAIRequestError(f"invalid message format: {param} must be an object", param)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise OpenAIRequestError(
                f"invalid message format: {param}.text must be a string", f"{param}.text"
            )
        return {"role": role, "content": text}
    if kind == "image_url":
        image = part.get("image_url")
        if isinstance(image, Mapping):
            return {
                "role": role,
                "content": "",
                "images": [_image(image.get("url"), f"{param}.image_url.url")],
            }
        return {"role": role, "content": "", "images": [_image(image, f"{param}.image_url")]}
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, Mapping) else None
        if not isinstance(data, str):
            raise OpenAIRequestError("invalid input_audio format: missing data", f"{param}.input_audio.data")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise OpenAIRequestError("invalid input_audio base64 data", f"{param}.input_audio.data") from None
        return {"role": role, "content": "", "images": [data]}  # Ollama carries audio as images
    raise OpenAIRequestError(
        f"invalid message format: {param}.type must be text, image_url or input_audio, got {kind!r}",
        f"{param}.type",
    )


def _tool_calls_in(calls: Any, param: str) -> list[dict[str, Any]]:
    """An assistant message's OpenAI tool calls as Ollama's (arguments parsed from their JSON)."""
    if not isinstance(calls, list):
        raise OpenAIRequestError(f"{param} must be an array of tool calls", param)
    out: list[dict[str, Any]] = []
    for j, call in enumerate(calls):
        where = f"{param}[{j}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise OpenAIRequestError(
                f"{where} must be {{'type': 'function', 'function': {{'name': ..., 'arguments': '...'}}}}",
                f"{where}.function",
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                # An empty string is what some clients send for a call without arguments.
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                arguments = None
        elif arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise OpenAIRequestError(
                "invalid tool call arguments: a JSON object encoded as a string",
                f"{where}.function.arguments",
            )
        converted: dict[str, Any] = {"function": {"name": function["name"], "arguments": arguments}}
        if isinstance(call.get("id"), str) and call["id"]:
            converted = {"id": call["id"], **converted}
        out.append(converted)
    return out


def _tool_name(messages: Sequence[Any], call_id: str) -> str:
    # openai.go's nameFromToolCallID: the last assistant call with that id names the tool.
    for message in reversed(messages):
        calls = message.get("tool_calls") if isinstance(message, Mapping) else None
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, Mapping) and call.get("id") == call_id:
                function = call.get("function")
                if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                    return function["name"]
    return ""


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise OpenAIRequestError(
            f"messages must be an array of message objects, got {_type_name(messages)}", "messages"
        )
    if not messages:
        raise OpenAIRequestError("[] is too short - 'messages'", "messages")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise OpenAIRequestError(f"{param} must be an object with role and content", param)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise OpenAIRequestError(
                f"{param}.role is required: system, user, assistant or tool", f"{param}.role"
            )
        extra: dict[str, Any] = {}
        reasoning = message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            extra["thinking"] = reasoning
        if message.get("tool_calls") is not None:
            extra["tool_calls"] = _tool_calls_in(message["tool_calls"], f"{param}.tool_calls")
        if role.lower() == "tool":
            call_id = message.get("tool_call_id")
            name = message.get("name")
            if not (isinstance(name, str) and name) and isinstance(call_id, str) and call_id:
                name = _tool_name(messages, call_id)
            if isinstance(name, str) and name:
                extra["tool_name"] = name
            if isinstance(call_id, str) and call_id:
                extra["tool_call_id"] = call_id
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content, **extra})
        elif isinstance(content, list):
            parts = [_part(part, role, f"{param}.content[{j}]") for j, part in enumerate(content)]
            # openai.go puts the message's tool calls, tool name and thinking on the last part.
            if parts and extra:
                parts[-1].update(extra)
            out.extend(parts)
        elif content is None and "tool_calls" in extra:
            out.append({"role": role, "content": "", **extra})
        else:
            raise OpenAIRequestError(
                f"{param}.content must be a string or an array of content parts"
                f" (null only with tool_calls), got {_type_name(content)}",
                f"{param}.content",
            )
    return out


def _tools(body: Mapping[str, Any]) -> list[Any] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise OpenAIRequestError(f"tools must be an array of tool objects, got {_type_name(tools)}", "tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise OpenAIRequestError(
                f"tools[{i}] must be {{'type': 'function',"
                " 'function': {'name': ..., 'parameters': {...}}}",
                f"tools[{i}].function",
            )
    return tools or None


def _tool_choice(body: Mapping[str, Any], tools: list[Any] | None) -> list[Any] | None:
    """The tools to send, given ``tool_choice``. Ollama has no tool_choice (its /v1 ignores it):
    ``none`` sends no tools, a named function sends only that one (the model may still answer in
    text), ``auto`` and ``required`` send them all (``required`` cannot be enforced)."""
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "required"):
        return tools
    if choice == "none":
        return None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str):
            chosen = [t for t in tools or () if t["function"].get("name") == name]
            if not chosen:
                raise OpenAIRequestError(
                    f"tool_choice names function {name!r}, which is not among tools", "tool_choice"
                )
            return chosen
    raise OpenAIRequestError(
        "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
        "tool_choice",
    )


def _format(body: Mapping[str, Any]) -> Any:
    spec = body.get("response_format")
    if spec is None:
        return None
    kind = spec.get("type") if isinstance(spec, Mapping) else None
    kind = kind.strip().lower() if isinstance(kind, str) else kind
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = spec.get("json_schema")
        if schema is None:
            return None  # openai.go: no schema, no format
        if not isinstance(schema, Mapping):
            raise OpenAIRequestError(
                "response_format.json_schema must be an object with a 'schema'", "response_format.json_schema"
            )
        inner = schema.get("schema")
        if inner is not None and not isinstance(inner, Mapping):
            raise OpenAIRequestError(
                "response_format.json_schema.schema must be a JSON Schema object",
                "response_format.json_schema.schema",
            )
        return inner
    raise OpenAIRequestError(
        "response_format must be {'type': 'text' | 'json_object' | 'json_schema', ...}", "response_format"
    )


def _think(body: Mapping[str, Any]) -> bool | str | None:
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and reasoning.get("effort") is not None:
        effort, param = reasoning.get("effort"), "reasoning.effort"
    else:
        effort, param = body.get("reasoning_effort"), "reasoning_effort"
    if effort is None or effort == "":
        return None
    if effort not in _THINK:
        raise OpenAIRequestError(
            f'invalid reasoning value: {effort!r} (must be "minimal", "low", "medium", "high", "xhigh",'
            ' "ultra", "max", or "none")',
            param,
        )
    return _THINK[effort]


def chat_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``POST /v1/chat/completions`` body -> (model, Ollama ``/api/chat`` body).

    Messages keep their roles; content parts become one Ollama message each (text, or a base64
    image from a data URL), as Ollama's /v1 does; assistant tool calls get their JSON arguments
    parsed, tool results get ``tool_name`` (from ``name`` or the matching call id). Options follow
    openai.go (temperature and top_p default 1.0; ``max_completion_tokens``/``max_tokens`` ->
    ``num_predict``); ``response_format`` json_object -> ``format: "json"``, json_schema -> the
    schema; ``reasoning_effort`` -> ``think``. Raises :class:`OpenAIRequestError` naming the field.
    """
    body = _body(body)
    model = _model(body)
    _single_choice(body)
    include_usage(body)  # validated here so a bad value fails before any instance is picked
    out: dict[str, Any] = {
        "model": model,
        "messages": _messages(body.get("messages")),
        "stream": _flag(body, "stream"),
    }
    fmt = _format(body)
    if fmt is not None:
        out["format"] = fmt
    out["options"] = _options(body, chat=True)
    tools = _tool_choice(body, _tools(body))
    if tools:
        out["tools"] = tools
    think = _think(body)
    if think is not None:
        out["think"] = think
    if _flag(body, "logprobs"):
        out["logprobs"] = True
        top = _integer(body, "top_logprobs", minimum=0)
        if top:
            out["top_logprobs"] = top
    return model, out


def completion_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``POST /v1/completions`` body -> (model, Ollama ``/api/generate`` body).

    ``prompt`` is one string (or an array holding one, as OpenAI's SDK may send it); token arrays
    and several prompts are refused, as Ollama's /v1 does. ``suffix`` is passed on for fill-in-the-middle.
    ``echo`` and ``best_of`` other than 1 are refused rather than ignored.
    """
    body = _body(body)
    model = _model(body)
    _single_choice(body)
    include_usage(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise OpenAIRequestError(
            "prompt must be one string (token arrays and several prompts are not supported),"
            f" got {_type_name(prompt)}",
            "prompt",
        )
    if _flag(body, "echo"):
        raise OpenAIRequestError("echo is not supported: Ollama does not return the prompt", "echo")
    best_of = _integer(body, "best_of")
    if best_of is not None and best_of != 1:
        raise OpenAIRequestError(f"best_of must be 1: Ollama answers one choice, got {best_of}", "best_of")
    out: dict[str, Any] = {"model": model, "prompt": prompt, "stream": _flag(body, "stream")}
    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str):
            raise OpenAIRequestError(f"suffix must be a string, got {_type_name(suffix)}", "suffix")
        if suffix:
            out["suffix"] = suffix
    out["options"] = _options(body, chat=False)
    return model, out


def embeddings_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``POST /v1/embeddings`` body -> (model, Ollama ``/api/embed`` body).

    ``input`` is a string or an array of strings (``""`` embeds one empty string, as Ollama's /v1
    does); token arrays are refused. ``encoding_format`` may be ``float`` or ``base64`` (the
    ``openai`` Python SDK asks for base64 by default); pass it on to :func:`embeddings_response`.
    """
    body = _body(body)
    model = _model(body)
    encoding = body.get("encoding_format")
    if encoding is not None and (
        not isinstance(encoding, str) or encoding.lower() not in ("float", "base64")
    ):
        raise OpenAIRequestError(
            f"Invalid value for 'encoding_format' = {encoding}. Supported values: ['float', 'base64'].",
            "encoding_format",
        )
    text = body.get("input")
    if text == "":
        text = [""]
    if isinstance(text, list) and text and all(isinstance(t, str) for t in text):
        pass
    elif not isinstance(text, str):
        why = "an empty array" if text == [] else _type_name(text)
        if isinstance(text, list) and text and all(isinstance(t, (int, list)) for t in text):
            why = "token arrays (not supported: send the text)"
        raise OpenAIRequestError(f"invalid input: a string or an array of strings, got {why}", "input")
    out: dict[str, Any] = {"model": model, "input": text}
    dimensions = _integer(body, "dimensions", minimum=1)
    if dimensions is not None:
        out["dimensions"] = dimensions
    return model, out


# --- responses --------------------------------------------------------------------------------------


def _usage(final: Mapping[str, Any]) -> dict[str, int]:
    prompt = final.get("prompt_eval_count") or 0
    completion = final.get("eval_count") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(done_reason: Any, tool_calls: bool) -> str:
    """openai.go's mapping, made total: ``length`` stays, ``stop`` becomes ``tool_calls`` when the
    answer called tools; anything else (``load``, ``unload``, none) reads as ``stop``, since the
    OpenAI SDKs' types allow no other value where Ollama would pass it through."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def _tool_calls_out(calls: Any, first_index: int) -> list[dict[str, Any]]:
    """Ollama tool calls as OpenAI's: arguments as a JSON string, an id (made up when Ollama sent
    none: a client needs it to send the result back) and the index within the answer."""
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        out.append(
            {
                "id": call.get("id") or f"call_{secrets.token_hex(6)}",
                "index": first_index + i,
                "type": "function",
                "function": {
                    "name": function.get("name", ""),
                    "arguments": json.dumps(
                        function.get("arguments") or {}, separators=(",", ":"), ensure_ascii=False
                    ),
                },
            }
        )
    return out


def chat_response(final: dict[str, Any], model: str, request_id: str, created: int) -> dict[str, Any]:
    """Ollama's non-streamed ``/api/chat`` answer -> OpenAI ``chat.completion``.

    ``model`` is echoed as the caller sent it (Ollama echoes the request's spelling); thinking goes
    to ``message.reasoning`` as in Ollama's /v1; usage from ``prompt_eval_count``/``eval_count``.
    """
    message = final.get("message") or {}
    calls = message.get("tool_calls")
    tool_calls = _tool_calls_out(calls, 0) if calls else None
    out_message: dict[str, Any] = {
        "role": message.get("role") or "assistant",
        "content": message.get("content", ""),
    }
    if message.get("thinking"):
        out_message["reasoning"] = message["thinking"]
    if tool_calls:
        out_message["tool_calls"] = tool_calls
    choice: dict[str, Any] = {
        "index": 0,
        "message": out_message,
        "finish_reason": _finish_reason(final.get("done_reason"), bool(tool_calls)),
    }
    if final.get("logprobs"):
        choice["logprobs"] = {"content": final["logprobs"]}
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [choice],
        "usage": _usage(final),
    }


def _chunk(request_id: str, created: int, model: str, choices: list[Any]) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
    }


def chat_chunk(
    chunk: dict[str, Any], model: str, request_id: str, created: int, first: bool, tool_index: int = 0
) -> dict[str, Any]:
    """One Ollama ``/api/chat`` stream chunk -> one ``chat.completion.chunk`` (finish_reason null).

    ``role`` is in the first chunk's delta only; content is kept even when empty (as Ollama's /v1
    does) unless the chunk carries only thinking (``delta.reasoning``); tool calls are numbered
    from ``tool_index`` (the calls already sent in this stream), so a client that merges deltas by
    index never glues two calls together. The done chunk's finish and usage are
    :func:`chat_finish_chunk` and :func:`chat_usage_chunk`; :class:`ChatStream` sequences all three.
    """
    message = chunk.get("message") or {}
    delta: dict[str, Any] = {"role": "assistant"} if first else {}
    content = message.get("content") or ""
    thinking = message.get("thinking")
    calls = message.get("tool_calls")
    if content or not (thinking or calls):
        delta["content"] = content
    if thinking:
        delta["reasoning"] = thinking
    if calls:
        delta["tool_calls"] = _tool_calls_out(calls, tool_index)
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
    if chunk.get("logprobs"):
        choice["logprobs"] = {"content": chunk["logprobs"]}
    return _chunk(request_id, created, model, [choice])


def chat_finish_chunk(
    final: dict[str, Any], model: str, request_id: str, created: int, tool_calls_sent: bool = False
) -> dict[str, Any]:
    """The dedicated finish chunk (empty delta) current Ollama and OpenAI send after the content."""
    reason = _finish_reason(final.get("done_reason"), tool_calls_sent)
    return _chunk(request_id, created, model, [{"index": 0, "delta": {}, "finish_reason": reason}])


def chat_usage_chunk(final: dict[str, Any], model: str, request_id: str, created: int) -> dict[str, Any]:
    """The last chunk when ``stream_options.include_usage``: no choices, the usage."""
    out = _chunk(request_id, created, model, [])
    out["usage"] = _usage(final)
    return out


class _Stream:
    """What every translated stream knows: who answers, under which id and time, whether the
    caller asked for usage, and whether the done chunk has been seen (``done``)."""

    __slots__ = ("created", "done", "include_usage", "model", "request_id")

    def __init__(self, model: str, request_id: str, created: int, *, include_usage: bool = False) -> None:
        self.model = model
        self.request_id = request_id
        self.created = created
        self.include_usage = include_usage
        self.done = False


class ChatStream(_Stream):
    """Turns one Ollama ``/api/chat`` stream into OpenAI's SSE, chunk by chunk (no I/O, no buffering).

    >>> stream = ChatStream("llama3.2", new_id(), 1761499281, include_usage=True)
    >>> # for each Ollama chunk: yield stream.feed(chunk)  (b"" when there is nothing to send)

    It carries the little state a stream needs: whether the role went out, how many tool calls
    were sent (their indexes, and ``tool_calls`` as the finish reason). Like Ollama's /v1 it splits
    a chunk with both thinking and content into two, skips the empty metrics-only trailer, then
    sends the finish chunk, the usage chunk when asked and ``[DONE]``.
    """

    __slots__ = ("started", "tool_calls_sent")

    def __init__(self, model: str, request_id: str, created: int, *, include_usage: bool = False) -> None:
        super().__init__(model, request_id, created, include_usage=include_usage)
        self.started = False
        self.tool_calls_sent = 0

    def chunks(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The OpenAI chunk objects for one Ollama chunk (``[DONE]`` not included)."""
        message = chunk.get("message") or {}
        content = message.get("content")
        thinking = message.get("thinking")
        calls = message.get("tool_calls")
        done = bool(chunk.get("done"))
        out: list[dict[str, Any]] = []
        if not (
            done and self.started and not content and not thinking and not calls and not chunk.get("logprobs")
        ):
            args = (self.model, self.request_id, self.created)
            if thinking and (content or calls):
                out.append(chat_chunk({"message": {"thinking": thinking}}, *args, not self.started))
                self.started = True
                rest = {
                    "message": {"content": content or "", "tool_calls": calls},
                    "logprobs": chunk.get("logprobs"),
                }
                out.append(chat_chunk(rest, *args, False, self.tool_calls_sent))
            else:
                out.append(chat_chunk(chunk, *args, not self.started, self.tool_calls_sent))
            self.started = True
            self.tool_calls_sent += len(calls) if calls else 0
        if done:
            self.done = True
            out.append(
                chat_finish_chunk(chunk, self.model, self.request_id, self.created, self.tool_calls_sent > 0)
            )
            if self.include_usage:
                out.append(chat_usage_chunk(chunk, self.model, self.request_id, self.created))
        return out

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The SSE bytes for one Ollama chunk, ending with ``data: [DONE]`` after the done chunk."""
        data = b"".join(map(sse, self.chunks(chunk)))
        return data + _DONE if self.done else data


# --- completions --------------------------------------------------------------------------------------


def _completion(request_id: str, created: int, model: str, text: str, reason: str | None) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"text": text, "index": 0, "finish_reason": reason, "logprobs": None}],
    }


def completion_response(final: dict[str, Any], model: str, request_id: str, created: int) -> dict[str, Any]:
    """Ollama's non-streamed ``/api/generate`` answer -> OpenAI ``text_completion``."""
    reason = _finish_reason(final.get("done_reason"), False)
    out = _completion(request_id, created, model, final.get("response", ""), reason)
    out["usage"] = _usage(final)
    return out


def completion_chunk(chunk: dict[str, Any], model: str, request_id: str, created: int) -> dict[str, Any]:
    """One Ollama ``/api/generate`` stream chunk -> one ``text_completion`` chunk; the done chunk
    carries the finish reason (Ollama's /v1 puts it there, with no separate finish chunk)."""
    reason = _finish_reason(chunk.get("done_reason"), False) if chunk.get("done") else None
    return _completion(request_id, created, model, chunk.get("response", ""), reason)


def completion_usage_chunk(
    final: dict[str, Any], model: str, request_id: str, created: int
) -> dict[str, Any]:
    """The last completion chunk when ``stream_options.include_usage``: no choices, the usage."""
    out = completion_chunk(final, model, request_id, created)
    out["choices"] = []
    out["usage"] = _usage(final)
    return out


class CompletionStream(_Stream):
    """Turns one Ollama ``/api/generate`` stream into OpenAI's SSE for ``/v1/completions``."""

    __slots__ = ()

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The SSE bytes for one Ollama chunk, ending with ``data: [DONE]`` after the done chunk."""
        data = sse(completion_chunk(chunk, self.model, self.request_id, self.created))
        if not chunk.get("done"):
            return data
        self.done = True
        if self.include_usage:
            data += sse(completion_usage_chunk(chunk, self.model, self.request_id, self.created))
        return data + _DONE


# --- embeddings and models ------------------------------------------------------------------------------


def _base64_floats(vector: Sequence[float]) -> str:
    # OpenAI's base64 format: little-endian float32, what the SDKs decode (openai.go floatsToBase64).
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_response(
    ollama_embed: dict[str, Any], model: str, encoding_format: str | None = None
) -> dict[str, Any]:
    """Ollama's ``/api/embed`` answer -> OpenAI's embedding list (vectors as floats, or as base64
    float32 when ``encoding_format`` is ``base64``); usage from ``prompt_eval_count``."""
    as_base64 = isinstance(encoding_format, str) and encoding_format.lower() == "base64"
    data = [
        {"object": "embedding", "embedding": _base64_floats(v) if as_base64 else v, "index": i}
        for i, v in enumerate(ollama_embed.get("embeddings") or ())
    ]
    tokens = ollama_embed.get("prompt_eval_count") or 0
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def _unix(timestamp: Any) -> int:
    """Seconds since the epoch of an RFC 3339 time as Ollama writes it (nanoseconds, offset);
    0 when absent or unreadable (Go's zero time would be far below; 0 is what clients expect)."""
    match = _TIMESTAMP.match(timestamp) if isinstance(timestamp, str) else None
    if match is None:
        return 0
    zone = match.group(3) or "+00:00"
    try:
        return int(datetime.fromisoformat(match.group(1) + ("+00:00" if zone == "Z" else zone)).timestamp())
    except ValueError:
        return 0


def model_entry(tag: Mapping[str, Any]) -> dict[str, Any]:
    """One ``/api/tags`` entry -> OpenAI's model object: ``owned_by`` is the name's namespace
    (``library`` for official models), ``created`` its ``modified_at``."""
    name = tag.get("model") or tag.get("name") or ""
    try:
        owner = parse_model_name(name).namespace
    except RequestError:
        owner = "library"
    return {"id": name, "object": "model", "created": _unix(tag.get("modified_at")), "owned_by": owner}


def models_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /v1/models`` from the pool's union of ``/api/tags`` entries: one object per model,
    however many instances hold it (the first entry seen names it)."""
    seen: set[str] = set()
    data = []
    for tag in models:
        entry = model_entry(tag)
        try:
            key = model_key(entry["id"])
        except RequestError:
            key = entry["id"]
        if key in seen:
            continue
        seen.add(key)
        data.append(entry)
    return {"object": "list", "data": data}
