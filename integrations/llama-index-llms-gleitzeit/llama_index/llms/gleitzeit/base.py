"""``OllamaPool``: LlamaIndex's ``Ollama`` LLM over a gleitzeit pool of Ollama servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.llms.generic_utils import (
    astream_chat_response_to_completion_response,
    chat_response_to_completion_response,
    stream_chat_response_to_completion_response,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import Model, ToolSelection
from llama_index.core.program.utils import FlexibleModel, process_streaming_objects
from llama_index.core.prompts import PromptTemplate
from llama_index.core.types import PydanticProgramMode

from gleitzeit_llm.adapter_fields import PoolFields
from gleitzeit_llm.blocking import run_blocking, sync_stream
from gleitzeit_llm.ollama.models import OPTION_NAMES
from gleitzeit_llm.ownership import ProviderHandle, ProviderOwner, provider_of
from gleitzeit_llm.provider import HINT_NAMES, OllamaPoolProvider
from gleitzeit_llm.upstream_errors import as_response_error
from llama_index.llms.gleitzeit import events
from llama_index.llms.gleitzeit._convert import StreamState, chat_response, to_ollama_messages
from llama_index.llms.gleitzeit._kwargs import drop_unused
from llama_index.llms.gleitzeit._pool import acontext_length, cached_context_length, context_length

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["OllamaPool"]

dispatcher = get_dispatcher(__name__)

# ChatRequest fields a call may set directly (besides model, messages, think, format, keep_alive, options).
_REQUEST_FIELDS = ("tools", "truncate", "shift", "logprobs", "top_logprobs")
_END = object()


class OllamaPool(FunctionCallingLLM, PoolFields, ProviderOwner):
    """LlamaIndex's ``Ollama`` LLM, served by a pool of Ollama servers.

    A drop-in for ``llama_index.llms.ollama.Ollama``: the same fields, plus where the pool comes
    from (``instances``, ``config``, ``pool`` or ``base_url``) and the routing hints as defaults
    for every call::

        from llama_index.llms.gleitzeit import OllamaPool

        llm = OllamaPool(
            model="llama3.2",
            instances=[{"id": "gpu", "url": "http://gpu:11434", "tags": ["gpu"]}, "http://cpu:11434"],
            request_timeout=120.0,
        )
        print(llm.complete("Why is the sky blue?"))
        print(llm.chat(messages, instance_tags=["gpu"], model="qwen3", thinking=False))

    Every call accepts ``model=``, the routing hints (``load_balancing_strategy``,
    ``instance_tags``, ``require_gpu``, ``fallback_model``, ``max_latency`` in ms, ``session_id``), the Ollama
    request fields (``format``, ``tools``, ``keep_alive``, ``think``/``thinking``, ``options``)
    and Ollama options as keywords (``temperature=0``, ``num_predict=64``, ``stop=[...]``); a
    per-call value wins over the field, ``thinking=False`` included. ``max_tokens`` is
    ``num_predict``; keywords other LLMs take and Ollama has no use for (``extra_headers``,
    ``tool_choice``, ``strict``, ...) are dropped with one warning per name; any other unknown
    keyword raises ``TypeError``. ``response.raw["pool"]`` says which instance answered, after
    how many attempts, and whether the fallback model did.

    ``metadata`` and ``get_context_window()`` ask ``/api/show`` once per model (when
    ``context_window`` is -1) and remember the answer for every ``OllamaPool`` on the same pool.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The Ollama model to use.")
    base_url: str | None = Field(
        default=None,
        description="One Ollama server, for a pool of one; instead of instances, config or pool.",
    )
    temperature: float | None = Field(default=None, description="The temperature to use for sampling.")
    context_window: int = Field(
        default=-1,
        description="Context tokens (sent as num_ctx); -1 asks /api/show once per model and pool.",
    )
    request_timeout: float | None = Field(
        default=None,
        description="Seconds to wait for the first byte and between chunks (default: the pool's timeouts).",
    )
    prompt_key: str = Field(default="prompt", description="Kept for compatibility with Ollama; unused.")
    json_mode: bool = Field(default=False, description="Ask for JSON output (format='json').")
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Ollama options sent with every request (top_k, seed, ...)."
    )
    is_function_calling_model: bool = Field(default=True, description="Whether the model can call tools.")
    keep_alive: float | str | None = Field(
        default=None, description="How long the model stays loaded after a request (Ollama's default: 5m)."
    )
    thinking: bool | Literal["low", "medium", "high"] | None = Field(
        default=None, description="Thinking on or off (or its level); None leaves it to the model."
    )
    _handle: ProviderHandle = PrivateAttr()  # closes the pool if this LLM built it
    _provider: OllamaPoolProvider = PrivateAttr()

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self._handle = provider_of(self)  # config None: GLEITZEIT_OLLAMA_*, else localhost:11434
        self._provider = self._handle.provider
        events.instrument_pool(self._provider)

    @classmethod
    def class_name(cls) -> str:
        return "OllamaPool_llm"

    # -- metadata -----------------------------------------------------------------------------

    @property
    def metadata(self) -> LLMMetadata:
        """LLM metadata; the context window comes from ``/api/show`` once per model and pool."""
        return self._metadata(self.get_context_window())

    def get_context_window(self) -> int:
        """``context_window`` if set, else the model's from ``/api/show`` (asked once per model
        and pool), else LlamaIndex's default, as ``Ollama.get_context_window`` answers."""
        return self._context_window(fetch=True)

    def _metadata(self, context_window: int) -> LLMMetadata:
        return LLMMetadata(
            context_window=context_window,
            num_output=DEFAULT_NUM_OUTPUTS,
            model_name=self.model,
            is_chat_model=True,
            is_function_calling_model=self.is_function_calling_model,
        )

    def _context_window(self, fetch: bool) -> int:
        return self._num_ctx(self.model, fetch) or DEFAULT_CONTEXT_WINDOW

    def to_payload(self) -> dict[str, Any]:
        """What instrumentation events carry about this LLM: no server round trip, no secrets."""
        payload = {
            "class_name": self.class_name(),
            **self._metadata(self._context_window(fetch=False)).model_dump(),
        }
        payload.update({name: getattr(self, name) for name in HINT_NAMES if getattr(self, name)})
        return payload

    def _num_ctx(self, model: str, fetch: bool = True) -> int | None:
        if self.context_window > 0:
            return self.context_window
        lookup = context_length if fetch else cached_context_length
        return lookup(self._provider, model)

    async def _anum_ctx(self, model: str) -> int | None:
        if self.context_window > 0:
            return self.context_window
        return await acontext_length(self._provider, model)

    # -- call arguments -----------------------------------------------------------------------

    def _split(self, kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The model and the provider params of one call: fields, overridden by what the call says."""
        given = dict(kwargs)
        model = given.pop("model", None) or self.model
        params: dict[str, Any] = {}
        for name in HINT_NAMES:
            value = given.pop(name) if name in given else getattr(self, name)
            if value is not None and value is not False:
                params[name] = (
                    list(value) if name == "instance_tags" and not isinstance(value, str) else value
                )
        if "think" in given and "thinking" in given:
            raise TypeError("give think= or thinking=, not both")
        think = given.pop("think") if "think" in given else given.pop("thinking", self.thinking)
        if think is not None:
            params["think"] = think
        response_format = given.pop("format") if "format" in given else ("json" if self.json_mode else None)
        if response_format is not None:
            params["format"] = response_format
        keep_alive = given.pop("keep_alive", self.keep_alive)
        if keep_alive is not None:
            params["keep_alive"] = keep_alive
        options: dict[str, Any] = {"temperature": self.temperature, **self.additional_kwargs}
        extra_options = given.pop("options", None)
        if extra_options:
            options.update(extra_options)
        max_tokens = given.pop("max_tokens", None)  # other LLMs' name (and core components') for it
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        for name in [n for n in given if n in OPTION_NAMES]:
            options[name] = given.pop(name)
        for name in _REQUEST_FIELDS:
            if name in given:
                params[name] = given.pop(name)
        if params.get("tools"):
            params["tools"] = [_tool_spec(tool) for tool in params["tools"]]
        if given:
            drop_unused(given)
        if given:
            raise TypeError(
                f"OllamaPool got unexpected keyword argument(s) {', '.join(map(repr, sorted(given)))}: "
                "not an Ollama request field, an Ollama option or a routing hint "
                "(Ollama options go in options={...} or additional_kwargs)"
            )
        params["options"] = options
        return model, params

    def _finish_options(self, params: dict[str, Any], num_ctx: int | None) -> dict[str, Any]:
        options = {k: v for k, v in params["options"].items() if v is not None}
        if num_ctx is not None:
            options.setdefault("num_ctx", num_ctx)
        if options:
            params["options"] = options
        else:
            del params["options"]
        return params

    def _params(self, kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        model, params = self._split(kwargs)
        return model, self._finish_options(
            params, self._num_ctx(model) if "num_ctx" not in params["options"] else None
        )

    async def _aparams(self, kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        model, params = self._split(kwargs)
        num_ctx = await self._anum_ctx(model) if "num_ctx" not in params["options"] else None
        return model, self._finish_options(params, num_ctx)

    # -- chat ---------------------------------------------------------------------------------

    def _chat(self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> ChatResponse:
        with _reported():
            model, params = self._params(kwargs)
            # On an event-loop thread the sync call runs in a worker (the core refuses to block a loop).
            response = run_blocking(self._provider.chat_sync, model, to_ollama_messages(messages), **params)
            return chat_response(response)

    async def _achat(self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> ChatResponse:
        with _reported():
            model, params = await self._aparams(kwargs)
            return chat_response(await self._provider.chat(model, to_ollama_messages(messages), **params))

    def _stream_chat(self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> ChatResponseGen:
        with _reported():  # mistakes in the call surface here, before any chunk is asked for
            model, params = self._params(kwargs)
            ollama_messages = to_ollama_messages(messages)
            stream = sync_stream(lambda: self._provider.stream_chat_sync(model, ollama_messages, **params))
        return _chunks(stream, active_span_id.get())

    async def _astream_chat(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> ChatResponseAsyncGen:
        with _reported():
            model, params = await self._aparams(kwargs)
            stream = self._provider.stream_chat(model, to_ollama_messages(messages), **params)
        return _achunks(stream, active_span_id.get())

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._achat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream_chat(messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return await self._astream_chat(messages, kwargs)

    # -- completion (a one-message chat, as Ollama's LLM does) ------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_response_to_completion_response(self._chat(_user(prompt), kwargs))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_response_to_completion_response(await self._achat(_user(prompt), kwargs))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_response_to_completion_response(self._stream_chat(_user(prompt), kwargs))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return astream_chat_response_to_completion_response(await self._astream_chat(_user(prompt), kwargs))

    # -- tools --------------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The chat arguments for a call with tools; the call's own kwargs (hints, model) go along.

        Ollama has no ``tool_choice``: ``"none"`` sends no tools, other choices and
        ``tool_required`` leave the choice to the model.
        """
        tool_choice = kwargs.pop("tool_choice", None)
        specs = [_tool_spec(tool) for tool in tools] if tool_choice != "none" else []
        messages = list(chat_history or [])  # never append to the caller's history
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        return {"messages": messages, "tools": specs or None, **kwargs}

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first tool call unless parallel calls are allowed (as Ollama's LLM does)."""
        if not allow_parallel_tool_calls:
            calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
            if len(calls) > 1:
                response.message.blocks = [
                    b for b in response.message.blocks if not isinstance(b, ToolCallBlock)
                ] + [calls[0]]
        return response

    def get_tool_calls_from_response(
        self,
        response: ChatResponse,
        error_on_no_tool_call: bool = True,
        **kwargs: Any,
    ) -> list[ToolSelection]:
        """The tool calls in a response (ids are Ollama's, or the tool name when it sent none)."""
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise ValueError("Expected at least one tool call, but got 0 tool calls.")
        return [
            ToolSelection(
                tool_id=call.tool_call_id or call.tool_name,
                tool_name=call.tool_name,
                tool_kwargs=call.tool_kwargs,  # type: ignore[arg-type]
            )
            for call in calls
        ]

    # -- structured output: Ollama's format= with the output class's JSON schema ------------------

    def _structured_kwargs(
        self, output_cls: type[Model], llm_kwargs: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        return {**(llm_kwargs or {}), "format": output_cls.model_json_schema()}

    @dispatcher.span
    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            return super().structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
        messages = prompt.format_messages(**prompt_args)
        response = self.chat(messages, **self._structured_kwargs(output_cls, llm_kwargs))
        return output_cls.model_validate_json(response.message.content or "")

    @dispatcher.span
    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            return await super().astructured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
        messages = prompt.format_messages(**prompt_args)
        response = await self.achat(messages, **self._structured_kwargs(output_cls, llm_kwargs))
        return output_cls.model_validate_json(response.message.content or "")

    @dispatcher.span
    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Model | FlexibleModel, None, None]:
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            return super().stream_structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
        messages = prompt.format_messages(**prompt_args)
        responses = self.stream_chat(messages, **self._structured_kwargs(output_cls, llm_kwargs))
        return _partial_objects(responses, output_cls)

    @dispatcher.span
    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Model | FlexibleModel, None]:
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            return await super().astream_structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
        messages = prompt.format_messages(**prompt_args)
        responses = await self.astream_chat(messages, **self._structured_kwargs(output_cls, llm_kwargs))
        return _apartial_objects(responses, output_cls)


def _user(prompt: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=prompt)]


def _tool_spec(tool: Any) -> Any:
    """A LlamaIndex tool as Ollama's (OpenAI-style) tool definition; dicts pass as they are."""
    metadata = getattr(tool, "metadata", None)
    if metadata is not None and hasattr(metadata, "to_openai_tool"):
        return metadata.to_openai_tool(skip_length_check=True)
    return tool


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Dispatch an ExceptionEvent (in the current span) for an error, then let it propagate.

    LlamaIndex's callbacks do this for errors inside a stream but not for a failed call, so a
    handler would otherwise only see a SpanDropEvent without the error's class.
    """
    try:
        yield
    except BaseException as exc:
        as_response_error(exc)  # also an ollama.ResponseError, as Ollama raises
        dispatcher.event(ExceptionEvent(exception=exc))
        raise


@contextlib.contextmanager
def _in_span(span_id: str | None) -> Iterator[None]:
    """Run a step of a stream in the span of the call that opened it (for the pool's events)."""
    token = active_span_id.set(span_id)
    try:
        yield
    except BaseException as exc:
        as_response_error(exc)  # a stream's error, as Ollama raises it
        raise
    finally:
        active_span_id.reset(token)


def _chunks(stream: Any, span_id: str | None) -> ChatResponseGen:
    state = StreamState()
    try:
        while True:
            with _in_span(span_id):
                chunk = next(stream, _END)
            if chunk is _END:
                return
            yield state.add(chunk, stream.pool)
    finally:
        stream.close()


async def _achunks(stream: Any, span_id: str | None) -> ChatResponseAsyncGen:
    state = StreamState()
    try:
        while True:
            with _in_span(span_id):
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    return
            yield state.add(chunk, stream.pool)
    finally:
        await stream.aclose()


def _partial_objects(
    responses: Iterator[ChatResponse], output_cls: type[Model]
) -> Generator[Model | FlexibleModel, None, None]:
    current: Any = None
    for response in responses:
        try:
            objects = process_streaming_objects(response, output_cls, cur_objects=current, flexible_mode=True)
        except Exception:
            continue  # not parseable yet
        current = objects if isinstance(objects, list) else [objects]
        yield objects  # type: ignore[misc]


async def _apartial_objects(
    responses: AsyncIterator[ChatResponse], output_cls: type[Model]
) -> AsyncGenerator[Model | FlexibleModel, None]:
    current: Any = None
    async for response in responses:
        try:
            objects = process_streaming_objects(response, output_cls, cur_objects=current, flexible_mode=True)
        except Exception:
            continue
        current = objects if isinstance(objects, list) else [objects]
        yield objects  # type: ignore[misc]
