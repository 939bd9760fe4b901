"""Typed requests and responses of the Ollama API.

Field names are exactly the wire's (``ollama-api.md``). Responses accept fields they do not know
(servers add new ones; they stay reachable through ``model_extra``); requests accept only the known
fields plus the free-form ``options`` dict, so a misplaced ``temperature`` or a routing hint that
leaked into a request is reported instead of being silently ignored by the server.

Invalid caller input raises :class:`~gleitzeit_llm.errors.RequestError` with ``field`` set,
before any network I/O::

    >>> ChatRequest(model="llama3.2", messages=[{"role": "user", "content": "hi"}]).to_wire(stream=False)
    {'model': 'llama3.2', 'messages': [{'role': 'user', 'content': 'hi'}], 'stream': False}
    >>> ChatRequest(model="", messages=[])
    Traceback (most recent call last):
    ...
    gleitzeit_llm.errors.RequestError: invalid chat request: model: model name is required

Streamed chunks fold into the non-streamed answer with :func:`aggregate_chat` and
:func:`aggregate_generate`; final responses expose server timings (:attr:`~ChatResponse.queue_time`,
:attr:`~ChatResponse.tokens_per_second`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gleitzeit_llm.errors import RequestError

__all__ = [
    "OPTION_NAMES",
    "ChatRequest",
    "ChatResponse",
    "EmbedRequest",
    "EmbedResponse",
    "GenerateRequest",
    "GenerateResponse",
    "ListResponse",
    "Message",
    "ModelDetails",
    "ModelInfo",
    "ProcessResponse",
    "RunningModel",
    "ShowRequest",
    "ShowResponse",
    "ToolCall",
    "ToolCallFunction",
    "VersionResponse",
    "aggregate_chat",
    "aggregate_generate",
    "fold_wire_chunks",
]

Role = Literal["system", "user", "assistant", "tool"]
THINK_LEVELS = ("low", "medium", "high", "max")

_RESPONSE_CONFIG = ConfigDict(extra="allow", protected_namespaces=())
_REQUEST_CONFIG = ConfigDict(extra="forbid", protected_namespaces=())

# Go's time.ParseDuration grammar, which Ollama uses for keep_alive strings.
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")

#: Ollama's Modelfile options: they go in a request's ``options``, never at its top level.
OPTION_NAMES = frozenset(
    [
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "seed",
        "num_predict",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "use_mmap",
        "num_thread",
        "num_keep",
        "repeat_last_n",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "penalize_newline",
    ]
)
_FIELD_HINTS = {
    "max_tokens": "Ollama has no max_tokens; use options={'num_predict': N}",
    "messages": "generate takes a prompt; use a chat request for messages",
    "prompt": "chat takes messages; use a generate request for a prompt",
}

_REQUEST_NAMES = {
    "ChatRequest": "chat request",
    "GenerateRequest": "generate request",
    "EmbedRequest": "embed request",
    "ShowRequest": "show request",
    "Message": "message",
}


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "request"


def _request_error(exc: ValidationError, model_name: str) -> RequestError:
    """Turn pydantic's report into one RequestError naming the first offending field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _field_path(first["loc"])
    leaf = str(first["loc"][-1]) if first["loc"] else field
    if first["type"] == "extra_forbidden":
        hint = _FIELD_HINTS.get(leaf) or (
            f"put it in options={{{leaf!r}: ...}}" if leaf in OPTION_NAMES else "not an Ollama request field"
        )
        detail = f"unknown field ({hint})"
    elif first["type"] == "missing":
        detail = "field required"
    else:
        detail = first["msg"].removeprefix("Value error, ")
        if first["type"] not in ("value_error",):
            given = repr(first.get("input"))
            detail += f" (got {given[:60] + '...' if len(given) > 60 else given})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    what = _REQUEST_NAMES.get(model_name, model_name)
    return RequestError(f"invalid {what}: {field}: {detail}{more}", field=field)


class _CallerInput(BaseModel):
    """Base of models built from caller input: validation failures raise RequestError."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _request_error(exc, type(self).__name__) from None

    # Same validation as BaseModel.__init__, so nested models are still validated in pydantic-core
    # (no Python call per nested message) and errors surface once, at the outermost model.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise _request_error(exc, cls.__name__) from None


_R = TypeVar("_R", bound="_Request")


class _Request(_CallerInput):
    model_config = _REQUEST_CONFIG
    _streams: ClassVar[bool] = True  # chat and generate always send "stream" explicitly

    model: str

    @field_validator("model", mode="before")
    @classmethod
    def _model_required(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("model name is required")
        return value

    @field_validator("options", mode="before", check_fields=False)
    @classmethod
    def _options(cls, value: Any) -> Any:
        if value is None:
            return None
        if hasattr(value, "model_dump"):  # e.g. ollama.Options
            value = value.model_dump(exclude_none=True)
        if not isinstance(value, Mapping):
            raise ValueError("options must be a mapping of Modelfile parameters")
        return {k: v for k, v in value.items() if v is not None}

    @field_validator("keep_alive", mode="before", check_fields=False)
    @classmethod
    def _keep_alive(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            text = value.strip()
            if _NUMBER.fullmatch(text):  # "-1", "300": send a number, which every server accepts
                number = float(text)
                return int(number) if number.is_integer() else number
            if _GO_DURATION.fullmatch(text):
                return text
        raise ValueError("keep_alive must be seconds (a number) or a duration such as '5m' or '1h30m'")

    @field_validator("think", mode="before", check_fields=False)
    @classmethod
    def _think(cls, value: Any) -> Any:
        if value is None or isinstance(value, bool) or value in THINK_LEVELS:
            return value
        raise ValueError(f"think must be true, false or one of {', '.join(THINK_LEVELS)}")

    @field_validator("format", mode="before", check_fields=False)
    @classmethod
    def _format(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if value == "json" or isinstance(value, dict):
            return value
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value.model_json_schema()
        if isinstance(value, Mapping):
            return dict(value)
        raise ValueError("format must be 'json' or a JSON schema (dict)")

    def to_wire(self, *, stream: bool | None = None) -> dict[str, Any]:
        """The JSON body to send: no ``None`` values, and ``stream`` always explicit.

        ``stream`` overrides the request's own field (the transport decides how it reads).
        """
        body = self.model_dump(exclude_none=True)
        if self._streams:
            body["stream"] = body.get("stream", False) if stream is None else stream
        return body

    @classmethod
    def coerce(cls: type[_R], request: Any) -> _R:
        """``request`` if it already is one, else validate a mapping into one."""
        if isinstance(request, cls):
            return request
        if isinstance(request, Mapping):
            return cls.model_validate(request)  # type: ignore[no-any-return]
        raise RequestError(
            f"expected a {cls.__name__} or a mapping, got {type(request).__name__}", field="request"
        )


# ---------------------------------------------------------------------------------------------
# Messages and tool calls (shared by requests and responses)


def _images_to_base64(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise ValueError("images must be a list of base64 strings or bytes")
    return [base64.b64encode(v).decode("ascii") if isinstance(v, (bytes, bytearray)) else v for v in value]


class ToolCallFunction(BaseModel):
    """The function part of a tool call: ``arguments`` is a JSON object, not a string."""

    model_config = _RESPONSE_CONFIG

    index: int | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments_object(cls, value: Any) -> Any:
        # OpenAI-style clients hand over arguments as a JSON string; Ollama wants the object.
        if isinstance(value, str):
            try:
                parsed = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("tool call arguments must be a JSON object") from None
            return parsed
        return value


class ToolCall(BaseModel):
    """``{"id": "call_…", "function": {"index": 0, "name": "…", "arguments": {…}}}``."""

    model_config = _RESPONSE_CONFIG

    id: str | None = None
    function: ToolCallFunction


class Message(_CallerInput):
    """A chat message: ``role`` and ``content``, plus thinking, images and tool calls."""

    model_config = _RESPONSE_CONFIG

    role: Role
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, value: Any) -> Any:
        return _images_to_base64(value)


# ---------------------------------------------------------------------------------------------
# Requests


class ChatRequest(_Request):
    """``POST /api/chat``.

    >>> ChatRequest(model="llama3.2", messages=[], keep_alive="10m", think="high").to_wire(stream=True)
    {'model': 'llama3.2', 'messages': [], 'keep_alive': '10m', 'think': 'high', 'stream': True}
    """

    model: str
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None
    format: Any = None
    options: dict[str, Any] | None = None
    stream: bool | None = None
    keep_alive: Any = None
    think: Any = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, bytes, Mapping)):
            raise ValueError("tools must be a list of tool definitions")
        return [t.model_dump(exclude_none=True) if hasattr(t, "model_dump") else t for t in value]


class GenerateRequest(_Request):
    """``POST /api/generate``."""

    model: str
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    stream: bool | None = None
    raw: bool | None = None
    format: Any = None
    keep_alive: Any = None
    images: list[str] | None = None
    options: dict[str, Any] | None = None
    think: Any = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, value: Any) -> Any:
        return _images_to_base64(value)


class EmbedRequest(_Request):
    """``POST /api/embed``: ``input`` is one string or a list of strings."""

    _streams: ClassVar[bool] = False

    model: str
    input: Any = Field(default="")
    truncate: bool | None = None
    dimensions: int | None = Field(default=None, gt=0)
    keep_alive: Any = None
    options: dict[str, Any] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise ValueError(f"input[{i}] must be a string, got {type(item).__name__}")
            return list(value)
        raise ValueError("input must be a string or a list of strings")


class ShowRequest(_Request):
    """``POST /api/show``."""

    _streams: ClassVar[bool] = False

    model: str
    verbose: bool | None = None


# ---------------------------------------------------------------------------------------------
# Responses


class _Timings:
    """Server timings of a final response (durations on the wire are integer nanoseconds)."""

    @property
    def load_time(self) -> float | None:
        """Seconds from arrival until the runner was ready (scheduler wait and model load)."""
        load = getattr(self, "load_duration", None)
        return None if load is None else load / 1e9

    @property
    def queue_time(self) -> float | None:
        """Seconds the request waited on the server: ``total - load - prompt_eval - eval``, >= 0."""
        total = getattr(self, "total_duration", None)
        if total is None:
            return None
        spent = (
            (getattr(self, "load_duration", None) or 0)
            + (getattr(self, "prompt_eval_duration", None) or 0)
            + (getattr(self, "eval_duration", None) or 0)
        )
        return max(0, total - spent) / 1e9

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens per second of generation (``eval_count / eval_duration``)."""
        count, duration = getattr(self, "eval_count", None), getattr(self, "eval_duration", None)
        return count * 1e9 / duration if count is not None and duration else None

    @property
    def prompt_tokens_per_second(self) -> float | None:
        """Prompt tokens per second of prompt evaluation."""
        count = getattr(self, "prompt_eval_count", None)
        duration = getattr(self, "prompt_eval_duration", None)
        return count * 1e9 / duration if count is not None and duration else None


class ChatResponse(_Timings, BaseModel):
    """One streamed chunk of ``/api/chat`` or the final answer (``done`` is true)."""

    model_config = _RESPONSE_CONFIG

    model: str
    created_at: str | None = None
    message: Message
    done: bool
    done_reason: str | None = None
    logprobs: list[Any] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateResponse(_Timings, BaseModel):
    """One streamed chunk of ``/api/generate`` or the final answer (``done`` is true)."""

    model_config = _RESPONSE_CONFIG

    model: str
    created_at: str | None = None
    response: str
    thinking: str | None = None
    done: bool
    done_reason: str | None = None
    context: list[int] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    tool_calls: list[ToolCall] | None = None
    logprobs: list[Any] | None = None


class EmbedResponse(_Timings, BaseModel):
    """``/api/embed``: one L2-normalised vector per input."""

    model_config = _RESPONSE_CONFIG

    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class ModelDetails(BaseModel):
    model_config = _RESPONSE_CONFIG

    parent_model: str | None = None
    format: str | None = None
    family: str | None = None
    families: list[str] | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None


class _NamedModel(BaseModel):
    """A model entry of ``/api/tags`` or ``/api/ps``: ``name`` and ``model`` are the full ``name:tag``."""

    model_config = _RESPONSE_CONFIG

    name: str | None = None
    model: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        # Old servers sent only "name"; current ones send both (identical).
        if isinstance(data, dict) and "model" not in data and "name" in data:
            return {**data, "model": data["name"]}
        return data


class ModelInfo(_NamedModel):
    """One installed model in ``/api/tags`` (``name`` and ``model`` are the full ``name:tag``)."""

    modified_at: datetime | None = None
    size: int | None = None
    digest: str | None = None
    details: ModelDetails | None = None


class RunningModel(_NamedModel):
    """One loaded model in ``/api/ps``; ``size_vram < size`` means partly on CPU."""

    size: int | None = None
    digest: str | None = None
    details: ModelDetails | None = None
    expires_at: datetime | None = None
    size_vram: int | None = None
    context_length: int | None = None


def _has_model(models: list[ModelInfo] | list[RunningModel], name: str) -> bool:
    from gleitzeit_llm.ollama.names import model_key

    key = model_key(name)
    return any(model_key(m.model) == key for m in models)


class ListResponse(BaseModel):
    """``GET /api/tags``: the installed models."""

    model_config = _RESPONSE_CONFIG

    models: list[ModelInfo]

    def has_model(self, name: str) -> bool:
        """Whether ``name`` (``llama3.2`` or ``llama3.2:latest``) is installed."""
        return _has_model(self.models, name)


class ProcessResponse(BaseModel):
    """``GET /api/ps``: the models loaded in memory."""

    model_config = _RESPONSE_CONFIG

    models: list[RunningModel]

    def has_model(self, name: str) -> bool:
        """Whether ``name`` is loaded right now."""
        return _has_model(self.models, name)


class ShowResponse(BaseModel):
    """``POST /api/show``: a model's Modelfile, template, details, ``model_info`` and capabilities."""

    model_config = _RESPONSE_CONFIG

    license: str | None = None
    modelfile: str | None = None
    parameters: str | None = None
    template: str | None = None
    system: str | None = None
    renderer: str | None = None
    parser: str | None = None
    details: ModelDetails | None = None
    messages: list[Message] | None = None
    remote_model: str | None = None
    remote_host: str | None = None
    model_info: dict[str, Any] | None = None
    projector_info: dict[str, Any] | None = None
    tensors: list[Any] | None = None
    capabilities: list[str] | None = None
    modified_at: datetime | None = None
    requires: Any = None

    @property
    def context_length(self) -> int | None:
        """The model's trained context length (``<architecture>.context_length`` in ``model_info``)."""
        info = self.model_info or {}
        value = info.get(f"{info.get('general.architecture')}.context_length")
        return value if isinstance(value, int) else None


class VersionResponse(BaseModel):
    """``GET /api/version``."""

    model_config = _RESPONSE_CONFIG

    version: str


# ---------------------------------------------------------------------------------------------
# Folding a stream into the non-streamed answer


def fold_wire_chunks(chunks: Sequence[Mapping[str, Any]], *, chat: bool) -> dict[str, Any]:
    """Fold raw streamed chunks (decoded NDJSON, not yet validated) into the wire form of the
    non-streamed answer, as :func:`aggregate_chat` / :func:`aggregate_generate` do for typed chunks.

    Validating one folded answer instead of every chunk is what makes a one-shot call that streams
    on the wire cheap: a chunk per token would otherwise cost a validation per token.
    """
    if not chunks:
        raise ValueError("fold_wire_chunks() needs at least one chunk")
    text_key = "content" if chat else "response"
    text: list[str] = []
    thinking: list[str] = []
    tool_calls: list[Any] = []
    logprobs: list[Any] = []
    for chunk in chunks:
        if chunk.get("logprobs"):
            logprobs.extend(chunk["logprobs"])
        part = (chunk.get("message") or {}) if chat else chunk
        if part.get(text_key):
            text.append(part[text_key])
        if part.get("thinking"):
            thinking.append(part["thinking"])
        if part.get("tool_calls"):
            tool_calls.extend(part["tool_calls"])
    last = dict(chunks[-1])
    folded = {
        text_key: "".join(text),
        "thinking": "".join(thinking) or None,
        "tool_calls": tool_calls or None,
    }
    if chat:
        last["message"] = {**(last.get("message") or {}), **folded}
    else:
        last.update(folded)
    last["logprobs"] = logprobs or None
    return last


def aggregate_chat(chunks: Iterable[ChatResponse]) -> ChatResponse:
    """Fold streamed chat chunks into the response ``"stream": false`` would have given.

    Content, thinking and logprobs are concatenated, tool calls collected in order; everything else
    (``done``, ``done_reason``, metrics, unknown fields) comes from the last chunk. A stream that
    stopped early folds into a response with ``done`` false.
    """
    content: list[str] = []
    thinking: list[str] = []
    tool_calls: list[ToolCall] = []
    logprobs: list[Any] = []
    last: ChatResponse | None = None
    for chunk in chunks:
        if chunk.logprobs:
            logprobs.extend(chunk.logprobs)
        message = chunk.message
        if message.content:
            content.append(message.content)
        if message.thinking:
            thinking.append(message.thinking)
        if message.tool_calls:
            tool_calls.extend(message.tool_calls)
        last = chunk
    if last is None:
        raise ValueError("aggregate_chat() needs at least one chunk")
    message = last.message.model_copy(
        update={
            "content": "".join(content),
            "thinking": "".join(thinking) or None,
            "tool_calls": tool_calls or None,
        }
    )
    return last.model_copy(update={"message": message, "logprobs": logprobs or None})


def aggregate_generate(chunks: Iterable[GenerateResponse]) -> GenerateResponse:
    """Fold streamed generate chunks into the non-streamed response (see :func:`aggregate_chat`)."""
    response: list[str] = []
    thinking: list[str] = []
    tool_calls: list[ToolCall] = []
    logprobs: list[Any] = []
    last: GenerateResponse | None = None
    for chunk in chunks:
        if chunk.logprobs:
            logprobs.extend(chunk.logprobs)
        if chunk.response:
            response.append(chunk.response)
        if chunk.thinking:
            thinking.append(chunk.thinking)
        if chunk.tool_calls:
            tool_calls.extend(chunk.tool_calls)
        last = chunk
    if last is None:
        raise ValueError("aggregate_generate() needs at least one chunk")
    return last.model_copy(
        update={
            "response": "".join(response),
            "thinking": "".join(thinking) or None,
            "tool_calls": tool_calls or None,
            "logprobs": logprobs or None,
        }
    )
