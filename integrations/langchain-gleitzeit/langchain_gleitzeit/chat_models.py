"""``ChatOllamaPool``: LangChain's ChatOllama over a pool of Ollama servers.

**Input** (LangChain -> Ollama): messages become Ollama chat messages (:mod:`._utils`), the
ChatOllama fields become the request's ``options``/``format``/``think``/``keep_alive``, bound tools
become ``tools``, and the routing hints (``instance_tags``, ``fallback_model``, ...) are handed to
the pool separately, so they never reach Ollama.

**Output** (Ollama -> LangChain): an ``AIMessage`` (or ``AIMessageChunk`` per streamed chunk) with
content, tool calls, ``additional_kwargs["reasoning_content"]`` for thinking, ``usage_metadata``,
and ``response_metadata`` holding Ollama's fields (``model_name``, ``done_reason``, durations,
counts) plus ``"pool"``: the serving instance, its URL, the attempts and whether the fallback
model answered.

Routing, retries, failover, queueing and health checks are the pool's
(:class:`gleitzeit_llm.OllamaPoolProvider`); this class only converts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough, RunnableSerializable
from langchain_core.runnables.utils import AnyConfigurableField
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, Field, PrivateAttr, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic.v1 import BaseModel as BaseModelV1
from typing_extensions import Self, is_typeddict

from gleitzeit_llm import RequestError
from gleitzeit_llm.blocking import run_blocking, sync_stream
from gleitzeit_llm.ownership import ProviderOwner
from gleitzeit_llm.upstream_errors import UPSTREAM_ERRORS
from langchain_gleitzeit._configurable import PoolConfigurableFields
from langchain_gleitzeit._pool import PoolFields, PoolHandle, open_pool, refuse_client_kwargs
from langchain_gleitzeit._utils import (
    HINT_FIELDS,
    OPTION_FIELDS,
    convert_messages,
    format_from_response_format,
    generation_info,
    tool_calls_from_ollama,
    usage_metadata,
)

__all__ = ["ChatOllamaPool"]

# Keyword arguments LangChain code passes to chat models that mean nothing to Ollama; dropped.
_IGNORED_KWARGS = frozenset(
    {"stream", "strict", "parallel_tool_calls", "ls_structured_output_format", "structured_output_format"}
)
_CALL_KWARGS = frozenset(
    {
        *OPTION_FIELDS,
        *HINT_FIELDS,
        *_IGNORED_KWARGS,
        "model",
        "format",
        "response_format",
        "reasoning",
        "think",
        "keep_alive",
        "options",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "max_tokens",
    }
)


class _Call:
    """One prepared call: the model, the Ollama messages and the provider's keyword arguments."""

    __slots__ = ("messages", "model", "params")

    def __init__(self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> None:
        self.model = model
        self.messages = messages
        self.params = params


class ChatOllamaPool(BaseChatModel, PoolFields, ProviderOwner):
    """Ollama chat model over a pool of Ollama servers: a drop-in for ``ChatOllama``.

    Same constructor fields as ``langchain_ollama.ChatOllama`` (``model``, ``temperature``,
    ``num_ctx``, ``num_predict``, ``stop``, ``format``, ``keep_alive``, ``reasoning``, ...), plus
    where the servers are and how to route::

        from langchain_gleitzeit import ChatOllamaPool

        llm = ChatOllamaPool(
            model="llama3.2",
            instances=["http://gpu1:11434", {"id": "cpu", "url": "http://cpu1:11434"}],
            temperature=0,
        )
        llm.invoke("Why is the sky blue?")
        llm.invoke("Summarise ...", instance_tags=["gpu"], fallback_model="llama3.2:1b")

    The pool is ``instances`` (URLs or instance mappings), ``config`` (a ``PoolConfig``, mapping
    or YAML path), ``base_url`` (one server, as in ChatOllama), ``pool`` (an existing
    ``OllamaPoolProvider`` shared by many models), or, with none of them, the
    ``GLEITZEIT_OLLAMA_*`` environment (default ``http://localhost:11434``). A pool the model
    builds is closed when the model is garbage-collected or by :meth:`close`.

    Routing hints (``load_balancing_strategy``, ``instance_tags``, ``require_gpu``,
    ``fallback_model``, ``max_latency`` in ms, ``session_id``) are fields (defaults) and per-call keyword
    arguments (``invoke(..., instance_tags=["gpu"])``); they steer the pool and are never sent to
    Ollama. :meth:`with_routing` gives a copy on the same pool with hints that survive
    ``bind_tools``, ``with_structured_output`` and agents (``bind(...)``'s do not). A per-call
    ``model=`` overrides the model. An unknown per-call keyword argument raises
    :class:`gleitzeit_llm.RequestError` (a ``ValueError``) naming it.

    Errors are gleitzeit-llm's (all ``GleitzeitError``): ``RequestError`` for invalid input or an
    HTTP 400, ``AllInstancesFailedError`` when every attempt failed, ``NoInstanceAvailableError``,
    ``PoolSaturatedError``, and ``StreamInterruptedError`` when a stream broke after its first chunk.
    """

    model: str
    """Model name to use (``llama3.2`` and ``llama3.2:latest`` are the same model)."""

    reasoning: bool | str | None = None
    """Thinking mode (Ollama's ``think``): ``True``/``False``, a level (``"low"``, ``"medium"``,
    ``"high"``), or ``None`` for the model's default. The thinking text is returned in
    ``additional_kwargs["reasoning_content"]``."""

    validate_model_on_init: bool = False
    """Check at construction that some instance of the pool has the model (``/api/tags``)."""

    mirostat: int | None = None
    """Mirostat sampling (``0`` off, ``1`` Mirostat, ``2`` Mirostat 2.0)."""
    mirostat_eta: float | None = None
    """Mirostat learning rate."""
    mirostat_tau: float | None = None
    """Mirostat balance between coherence and diversity."""
    num_ctx: int | None = None
    """Context window size."""
    num_gpu: int | None = None
    """Number of layers to offload to GPUs."""
    num_thread: int | None = None
    """Threads used for computation."""
    num_predict: int | None = None
    """Maximum number of tokens to generate (``-1`` infinite). ``max_tokens=`` is accepted as an alias."""
    repeat_last_n: int | None = None
    """How far back to look to prevent repetition."""
    repeat_penalty: float | None = None
    """How strongly to penalise repetitions."""
    temperature: float | None = None
    """Sampling temperature."""
    seed: int | None = None
    """Random seed for reproducible generations."""
    logprobs: bool | None = None
    """Return log probabilities (``response_metadata["logprobs"]``)."""
    top_logprobs: int | None = Field(default=None, ge=1)
    """Most likely tokens to return per position (enables ``logprobs``)."""
    stop: list[str] | None = None
    """Stop sequences."""
    tfs_z: float | None = None
    """Tail free sampling."""
    top_k: int | None = None
    """Top-k sampling."""
    top_p: float | None = None
    """Top-p (nucleus) sampling."""
    format: Literal["", "json"] | JsonSchemaValue | None = None
    """Output format: ``"json"`` or a JSON schema."""
    keep_alive: int | str | None = None
    """How long the model stays loaded after a request (seconds or ``"5m"``)."""

    # -- the pool ---------------------------------------------------------------------------------

    # instances, config, base_url, pool, health_checks and the routing hints: see PoolFields
    timeout: float | None = Field(default=None, gt=0)
    """Seconds the whole call may take, stream, failover and backoff included (the built pool's
    ``timeouts.total``)."""
    max_retries: int | None = Field(default=None, ge=0)
    """Attempts after a failure (the built pool's ``load_balancing.retry_attempts``); a pool of one
    server makes one attempt unless this is given."""

    _handle: PoolHandle = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, values: Any) -> Any:
        if not isinstance(values, Mapping):
            return values
        values = dict(values)
        max_tokens = values.pop("max_tokens", None)
        if max_tokens is not None and values.get("num_predict") is None:
            values["num_predict"] = max_tokens
        return refuse_client_kwargs(values, "ChatOllama", timeouts="with timeout= or the pool config")

    @model_validator(mode="after")
    def _open_pool(self) -> Self:
        if self.top_logprobs is not None and self.logprobs is False:
            raise ValueError(
                "top_logprobs is set but logprobs is False; set logprobs=True or drop top_logprobs"
            )
        self._handle = open_pool(
            pool=self.pool,
            instances=self.instances,
            config=self.config,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            health_checks=self.health_checks,
            validate=self.model if self.validate_model_on_init else None,
            shared_state=self.shared_state,
        )
        return self

    # -- LangChain plumbing ----------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "chat-ollama-pool"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model}
        for name in (*OPTION_FIELDS, "stop", "format", "reasoning", "keep_alive", "logprobs", "top_logprobs"):
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        for name in HINT_FIELDS:
            value = getattr(self, name)
            if value:
                params[name] = value
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Standard tracing params; a per-call ``model`` (or temperature, max tokens) is reported."""
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="ollama",
            ls_model_name=model if isinstance(model, str) and model else self.model,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", kwargs.get("num_predict", self.num_predict))
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        if ls_stop := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = ls_stop
        return params

    def configurable_fields(
        self, **kwargs: AnyConfigurableField
    ) -> RunnableSerializable[LanguageModelInput, BaseMessage]:
        """LangChain's ``configurable_fields``; a model rebuilt with configured fields uses this
        model's pool (health, breakers, in-flight counts), unless a configured field defines
        the pool (``instances``, ``config``, ``base_url``, ``pool``, ``timeout``, ...)."""
        fields = super().configurable_fields(**kwargs)  # LangChain's checks of the field names
        return PoolConfigurableFields(default=self, fields=fields.fields)  # type: ignore[attr-defined]

    # -- building the request --------------------------------------------------------------------

    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> _Call:
        unknown = sorted(set(kwargs) - _CALL_KWARGS)
        if unknown:
            raise RequestError(
                f"ChatOllamaPool got unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"accepted: Ollama options ({', '.join(OPTION_FIELDS)}), routing hints "
                f"({', '.join(HINT_FIELDS)}), model, format, response_format, reasoning, keep_alive, "
                "options, tools, tool_choice, logprobs, top_logprobs, max_tokens",
                field=unknown[0],
            )
        model = kwargs.get("model") or self.model

        options = {name: getattr(self, name) for name in OPTION_FIELDS if getattr(self, name) is not None}
        stop = stop if stop is not None else self.stop
        if stop:
            options["stop"] = list(stop)
        extra_options = kwargs.get("options")
        if extra_options is not None:
            if not isinstance(extra_options, Mapping):
                raise RequestError("options must be a mapping of Modelfile parameters", field="options")
            options.update(extra_options)
        for name in OPTION_FIELDS:
            if kwargs.get(name) is not None:
                options[name] = kwargs[name]
        if kwargs.get("max_tokens") is not None and kwargs.get("num_predict") is None:
            options["num_predict"] = kwargs["max_tokens"]

        if kwargs.get("format") is not None:
            fmt = kwargs["format"]
        elif kwargs.get("response_format") is not None:
            fmt = format_from_response_format(kwargs["response_format"])
        else:
            fmt = self.format
        think = kwargs.get("reasoning", kwargs.get("think", self.reasoning))
        top_logprobs = kwargs.get("top_logprobs", self.top_logprobs)
        logprobs = kwargs.get("logprobs", self.logprobs)
        if top_logprobs is not None and logprobs is None:
            logprobs = True

        params: dict[str, Any] = {
            "options": options or None,
            "format": fmt or None,
            "think": think,
            "keep_alive": kwargs.get("keep_alive", self.keep_alive),
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
            "tools": _select_tools(kwargs.get("tools"), kwargs.get("tool_choice")),
        }
        for name in HINT_FIELDS:
            value = kwargs[name] if name in kwargs else getattr(self, name)
            if value is not None and value is not False:
                params[name] = value
        params = {k: v for k, v in params.items() if v is not None}
        return _Call(model, convert_messages(messages), params)

    # -- calls -----------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, kwargs)
        # On an event-loop thread (invoke() inside async code) the sync call runs in a worker.
        with UPSTREAM_ERRORS:  # also an ollama.ResponseError, as ChatOllama raises
            response = run_blocking(self.provider.chat_sync, call.model, call.messages, **call.params)
        return _chat_result(response)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, kwargs)
        with UPSTREAM_ERRORS:
            response = await self.provider.chat(call.model, call.messages, **call.params)
        return _chat_result(response)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # LangChain's stream() reports every chunk to the callbacks itself.
        call = self._prepare(messages, stop, kwargs)
        started = time.monotonic()
        stream = sync_stream(lambda: self.provider.stream_chat_sync(call.model, call.messages, **call.params))
        try:
            with UPSTREAM_ERRORS:
                for chunk in stream:
                    yield _chunk(chunk, stream.pool, started)
        finally:
            stream.close()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, kwargs)
        started = time.monotonic()
        stream = self.provider.stream_chat(call.model, call.messages, **call.params)
        try:
            with UPSTREAM_ERRORS:
                async for chunk in stream:
                    yield _chunk(chunk, stream.pool, started)
        finally:
            await stream.aclose()

    # -- tools and structured output -------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (anything ``convert_to_openai_tool`` takes) to this model.

        Ollama cannot force a tool call, so ``tool_choice`` only narrows what is sent: a tool's
        name (or ``{"function": {"name": ...}}``) sends that tool alone, ``"none"``/``False``
        sends none, and ``"auto"``, ``"any"``, ``"required"``, ``True`` send all of them.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_mode", "json_schema"] = "json_schema",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """A runnable whose output matches ``schema`` (a Pydantic class, TypedDict, JSON or OpenAI schema).

        ``method``: ``"json_schema"`` (Ollama's structured outputs, the default),
        ``"function_calling"`` (a tool call) or ``"json_mode"`` (``format="json"``; describe the
        wanted keys in the prompt). With ``include_raw`` the output is
        ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``.
        """
        kwargs.pop("strict", None)  # Ollama enforces a format schema exactly; there is no strict switch
        if kwargs:
            raise ValueError(f"Received unsupported arguments {kwargs}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        output_parser: Runnable[Any, Any]
        if method == "function_calling":
            if schema is None:
                raise ValueError("schema must be specified when method is not 'json_mode'. Received None.")
            formatted = convert_to_openai_tool(schema)
            tool_name = formatted["function"]["name"]
            llm = self.bind_tools(
                [schema],
                tool_choice=tool_name,
                ls_structured_output_format={"kwargs": {"method": method}, "schema": formatted},
            )
            if is_pydantic:
                output_parser = PydanticToolsParser(tools=[cast("type", schema)], first_tool_only=True)
            else:
                output_parser = JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True)
        elif method == "json_mode":
            llm = self.bind(
                format="json",
                ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
            )
            output_parser = (
                PydanticOutputParser(pydantic_object=cast("type", schema))
                if is_pydantic
                else JsonOutputParser()
            )
        elif method == "json_schema":
            if schema is None:
                raise ValueError("schema must be specified when method is not 'json_mode'. Received None.")
            if is_pydantic:
                pydantic_schema = cast("type", schema)
                response_format = (
                    pydantic_schema.schema()
                    if issubclass(pydantic_schema, BaseModelV1)
                    else pydantic_schema.model_json_schema()
                )
                output_parser = PydanticOutputParser(pydantic_object=pydantic_schema)
                traced: Any = schema
            else:
                if is_typeddict(schema):
                    response_format = convert_to_json_schema(schema)
                    response_format.setdefault("required", list(response_format.get("properties", {})))
                else:
                    response_format = dict(cast("dict[str, Any]", schema))
                output_parser = JsonOutputParser()
                traced = response_format
            llm = self.bind(
                format=response_format,
                ls_structured_output_format={"kwargs": {"method": method}, "schema": traced},
            )
        else:
            raise ValueError(
                "Unrecognized method argument. Expected one of 'function_calling', 'json_schema', "
                f"or 'json_mode'. Received: '{method}'"
            )
        if include_raw:
            parser_assign = RunnablePassthrough.assign(
                parsed=itemgetter("raw") | output_parser, parsing_error=lambda _: None
            )
            parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
            parser_with_fallback = parser_assign.with_fallbacks([parser_none], exception_key="parsing_error")
            return RunnableMap(raw=llm) | parser_with_fallback
        return llm | output_parser


def _select_tools(tools: Any, tool_choice: Any) -> list[dict[str, Any]] | None:
    """The tools to send: all of them, only the chosen one, or none (``tool_choice="none"``)."""
    if not tools:
        return None
    formatted = [
        tool if isinstance(tool, Mapping) and "function" in tool else convert_to_openai_tool(tool)
        for tool in tools
    ]
    if tool_choice is None or tool_choice is True or tool_choice in ("auto", "any", "required"):
        return [dict(tool) for tool in formatted]
    if tool_choice is False or tool_choice == "none":
        return None
    if isinstance(tool_choice, str):
        name = tool_choice
    elif isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool_choice.get("name")
    else:
        name = None
    chosen = [dict(tool) for tool in formatted if tool["function"].get("name") == name]
    if not chosen:
        names = ", ".join(str(tool["function"].get("name")) for tool in formatted)
        raise RequestError(
            f"tool_choice {tool_choice!r} names no bound tool (bound: {names})", field="tool_choice"
        )
    return chosen


def _chat_result(response: Any) -> ChatResult:
    message = response.message
    extra = {"reasoning_content": message.thinking} if message.thinking else {}
    ai = AIMessage(
        content=message.content,
        tool_calls=tool_calls_from_ollama(message.tool_calls),
        additional_kwargs=extra,
        usage_metadata=usage_metadata(response),
    )
    return ChatResult(
        generations=[ChatGeneration(message=ai, generation_info=generation_info(response, response.pool))]
    )


def _chunk(chunk: Any, pool: Any, started: float) -> ChatGenerationChunk:
    message = chunk.message
    extra = {"reasoning_content": message.thinking} if message.thinking else {}
    if chunk.done:
        info: dict[str, Any] | None = generation_info(chunk, pool, time.monotonic() - started)
        usage = usage_metadata(chunk)
    else:
        info = {"logprobs": chunk.logprobs} if chunk.logprobs else None
        usage = None
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=message.content,
            additional_kwargs=extra,
            tool_calls=tool_calls_from_ollama(message.tool_calls),
            usage_metadata=usage,
            chunk_position="last" if chunk.done else None,
        ),
        generation_info=info,
    )
