"""Conversions between LangChain messages and the Ollama chat wire format, and the pool's metadata.

Nothing here talks to a server: the chat model and the embeddings hand the results to
:class:`gleitzeit_llm.OllamaPoolProvider`, which routes, retries and measures.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import uuid4

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call

from gleitzeit_llm.hints import HINT_NAMES
from gleitzeit_llm.ollama.models import OPTION_NAMES

__all__ = [
    "HINT_FIELDS",
    "OPTION_FIELDS",
    "convert_messages",
    "format_from_response_format",
    "generation_info",
    "is_option",
    "option_fields",
    "pool_metadata",
    "tool_calls_from_ollama",
    "usage_metadata",
]

#: Fields langchain-ollama sends in ``options`` that are not in Ollama's list (any more); Ollama
#: ignores them, and so a drop-in swap keeps accepting them.
_LANGCHAIN_ONLY_OPTIONS = frozenset({"tfs_z"})


def is_option(name: str) -> bool:
    """Whether the field ``name`` is an Ollama option, which travels in the request's ``options``."""
    return name in OPTION_NAMES or name in _LANGCHAIN_ONLY_OPTIONS


def option_fields(fields: Iterable[str]) -> tuple[str, ...]:
    """The option fields among a model's ``fields``, in their order."""
    return tuple(name for name in fields if is_option(name))


#: The subset of Ollama's options that ChatOllama (and so ChatOllamaPool) takes as fields and call
#: arguments, in ChatOllama's order; ``stop`` is separate (it is also ``invoke``'s own argument).
#: Every name passes :func:`is_option` (a test checks it).
OPTION_FIELDS = (
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "num_ctx",
    "num_gpu",
    "num_thread",
    "num_predict",
    "repeat_last_n",
    "repeat_penalty",
    "temperature",
    "seed",
    "tfs_z",
    "top_k",
    "top_p",
)

#: Routing hints: they steer the pool and never reach Ollama (the core's names).
HINT_FIELDS = HINT_NAMES

_ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
}
# Content blocks that carry nothing Ollama can take as input text or images.
_SKIPPED_BLOCKS = frozenset(
    {
        "tool_use",
        "tool_call",
        "tool_call_chunk",
        "server_tool_call",
        "server_tool_result",
        "invalid_tool_call",
    }
)
_REASONING_BLOCKS = frozenset({"reasoning", "thinking"})
# Fields of a final chunk that are Ollama's response, not ours.
_GENERATION_FIELDS = (
    "model",
    "created_at",
    "done",
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


# ---------------------------------------------------------------------------------------------
# LangChain -> Ollama


def convert_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as Ollama ``/api/chat`` messages (dicts; the caller's objects are untouched).

    Text parts are joined with newlines, images (base64 or ``data:`` URLs, OpenAI, LangChain v0/v1
    and Anthropic block shapes) go to ``images``, an AI message's tool calls to ``tool_calls`` and
    its ``reasoning_content`` (or reasoning blocks) to ``thinking``; a tool result carries
    ``tool_call_id`` and ``tool_name`` (looked up from the call when the message has no name).
    """
    names_by_call_id: dict[str, str] = {}
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = _role(message)
        text, images, thinking = _content(message.content, role)
        entry: dict[str, Any] = {"role": role, "content": text}
        if images:
            entry["images"] = images
        if isinstance(message, AIMessage):
            calls = []
            for call in message.tool_calls:
                if call.get("id"):
                    names_by_call_id[call["id"]] = call["name"]
                wire: dict[str, Any] = {"function": {"name": call["name"], "arguments": call["args"]}}
                if call.get("id"):
                    wire["id"] = call["id"]
                calls.append(wire)
            if calls:
                entry["tool_calls"] = calls
            reasoning = message.additional_kwargs.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                thinking = reasoning
            if thinking:
                entry["thinking"] = thinking
        elif isinstance(message, ToolMessage):
            entry["tool_call_id"] = message.tool_call_id
            name = message.name or names_by_call_id.get(message.tool_call_id)
            if name:
                entry["tool_name"] = name
        converted.append(entry)
    return converted


def _role(message: BaseMessage) -> str:
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, ChatMessage):
        role = _ROLES.get(message.role.lower())
        if role is None:
            raise ValueError(
                f"Ollama does not know the chat role {message.role!r}; "
                "use one of system, user, assistant, tool"
            )
        return role
    raise TypeError(f"Received unsupported message type for Ollama: {type(message).__name__}")


def _content(content: str | list[Any], role: str) -> tuple[str, list[str], str | None]:
    """(text, base64 images, thinking) of a message's content."""
    if isinstance(content, str):
        return content, [], None
    texts: list[str] = []
    images: list[str] = []
    thinking: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, Mapping):
            raise ValueError(f"unsupported content part {part!r}")
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind in ("image_url", "image"):
            images.append(_image(part))
        elif kind in _REASONING_BLOCKS:
            value = part.get("reasoning") or part.get("thinking")
            if isinstance(value, str) and value:
                thinking.append(value)
        elif kind == "json" and "json" in part:
            texts.append(json.dumps(part["json"], ensure_ascii=False))
        elif kind == "non_standard":
            texts.append(str(part.get("value", "")))
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise ValueError(
                f"Ollama cannot take content blocks of type {kind!r} in a {role} message "
                "(supported: text, image_url, image with base64 data)"
            )
    return "\n".join(texts), images, "".join(thinking) or None


def _image(part: Mapping[str, Any]) -> str:
    """The base64 payload of one image block; Ollama takes no image URLs."""
    if part.get("type") == "image_url":
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, Mapping) else value
        if not isinstance(url, str):
            raise ValueError("image_url must be a string or a dict with a string 'url'")
        return _image_data(url)
    if isinstance(part.get("base64"), str):  # LangChain v1
        return str(part["base64"])
    if part.get("source_type") == "base64" and isinstance(part.get("data"), str):  # LangChain v0
        return str(part["data"])
    source = part.get("source")
    if isinstance(source, Mapping) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        return str(source["data"])  # Anthropic
    url = part.get("url")
    if isinstance(url, str):
        return _image_data(url)
    raise ValueError("Ollama takes images as inline base64 data only")


def _image_data(url: str) -> str:
    if url.startswith("data:"):
        _, _, data = url.partition(",")
        return data
    if url.startswith(("http://", "https://")):
        raise ValueError(
            "Ollama takes images as base64 data, not URLs: download the image and pass it as "
            "a data: URL or a base64 image block"
        )
    return url  # already base64


def format_from_response_format(response_format: Any) -> Any:
    """Ollama's ``format`` for an OpenAI-style ``response_format`` (``json_object`` or ``json_schema``)."""
    if not isinstance(response_format, Mapping):
        raise ValueError(f"response_format must be a dict, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        block = response_format.get("json_schema")
        if isinstance(block, Mapping) and isinstance(block.get("schema"), Mapping):
            return dict(block["schema"])
        raise ValueError("response_format of type 'json_schema' needs json_schema={'schema': {...}}")
    raise ValueError(f"response_format type must be 'json_object' or 'json_schema', got {kind!r}")


# ---------------------------------------------------------------------------------------------
# Ollama -> LangChain


def tool_calls_from_ollama(raw_calls: Iterable[Any] | None) -> list[ToolCall]:
    """LangChain tool calls from Ollama's (the core's ``ToolCall`` models or plain dicts)."""
    calls: list[ToolCall] = []
    for raw in raw_calls or ():
        data = raw.model_dump() if hasattr(raw, "model_dump") else dict(raw)
        function = data.get("function") or {}
        name = function.get("name", "")
        calls.append(
            tool_call(
                id=data.get("id") or str(uuid4()),
                name=name,
                args=_arguments(name, function.get("arguments")),
            )
        )
    return calls


def _arguments(name: str, arguments: Any) -> dict[str, Any]:
    """Tool arguments as a dict; string-encoded JSON values inside are decoded (as ChatOllama does).

    Some models put nested objects into arguments as JSON strings (ollama/ollama#6155).
    """
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        parsed = _loads(arguments)
        return parsed if isinstance(parsed, dict) else {}
    result: dict[str, Any] = {}
    for key, value in dict(arguments).items():
        if key == "functionName" and value == name:
            continue  # an echo of the function's name some models add
        if isinstance(value, str):
            parsed = _loads(value)
            result[key] = parsed if isinstance(parsed, (dict, list)) else value
        else:
            result[key] = value
    return result


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        try:
            return ast.literal_eval(text)
        except (SyntaxError, ValueError):
            return text


def usage_metadata(response: Any) -> UsageMetadata | None:
    """Token counts of a final response (``prompt_eval_count`` in, ``eval_count`` out)."""
    inputs = getattr(response, "prompt_eval_count", None)
    outputs = getattr(response, "eval_count", None)
    if inputs is None and outputs is None:
        return None
    inputs, outputs = inputs or 0, outputs or 0
    return UsageMetadata(input_tokens=inputs, output_tokens=outputs, total_tokens=inputs + outputs)


def pool_metadata(pool: Any, duration: float | None = None) -> dict[str, Any]:
    """``response_metadata["pool"]``: which instance served the call, after how many attempts."""
    if pool is None:
        return {}
    data: dict[str, Any] = pool.as_dict()
    if duration is not None:
        data["duration"] = duration
    return data


def generation_info(final: Any, pool: Any = None, duration: float | None = None) -> dict[str, Any]:
    """``response_metadata`` of an answer: Ollama's fields (as ChatOllama reports them) and the pool's."""
    info: dict[str, Any] = {}
    for name in _GENERATION_FIELDS:
        value = getattr(final, name, None)
        if value is not None:
            info[name] = value
    extra = getattr(final, "__pydantic_extra__", None)
    if extra:
        info.update({k: v for k, v in extra.items() if k not in ("message", "pool")})
    logprobs = getattr(final, "logprobs", None)
    if logprobs is not None:
        info["logprobs"] = logprobs
    if "model" in info:
        info["model_name"] = info["model"]
    info["model_provider"] = "ollama"
    if pool is not None:
        info["pool"] = pool_metadata(pool, duration)
    return info
