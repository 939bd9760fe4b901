"""``PrometheusEventHandler``: per-call Prometheus metrics from LlamaIndex's instrumentation events.

Metrics are recorded through :class:`gleitzeit_llm.observability.framework.CallTracker` into
:class:`gleitzeit_llm.observability.metrics.CallMetrics`, as LangChain's
``PrometheusCallbackHandler`` does, so both frameworks produce the same series with the same
meaning:

* ``gen_ai_client_operation_duration_seconds`` (``error_type`` label): from the call until its
  last chunk, failovers included;
* ``gen_ai_client_token_usage`` (``gen_ai_token_type`` = ``input`` | ``output``);
* ``gen_ai_client_operation_time_to_first_chunk_seconds`` and
  ``gen_ai_client_operation_time_per_output_chunk_seconds`` (streamed calls);
* ``gleitzeit_calls_total`` (``outcome``, ``error_type``), ``gleitzeit_call_attempts``,
  ``gleitzeit_call_failovers_total`` and ``gleitzeit_call_fallbacks_total``.

Labels: ``gen_ai_operation_name`` (``chat``, ``text_completion`` or ``embeddings``), the model
asked for (per-call ``model=`` included) and the one that answered, ``server_address`` and
``server_port`` and ``gleitzeit_instance`` (the instance that served the call, from
``response.raw["pool"]``). Upstream classes leave ``base_url`` out of the payload their events
carry, so their server labels are empty. Never prompts, span ids or URLs.

Requires ``prometheus-client`` (``pip install gleitzeit-llm[prometheus]``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from contextvars import ContextVar
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent, EmbeddingStartEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.span import SpanDropEvent

from gleitzeit_llm.observability.framework import CallTracker, pool_of, server_of
from gleitzeit_llm.observability.metrics import CallMetrics
from llama_index.llms.gleitzeit.events import PoolEmbeddingCallEvent

__all__ = ["PrometheusEventHandler"]

# LLM classes (their class_name()) served by Ollama, so the provider label stays true. Ollama's
# own LLM implements completion as a chat inside the completion: the completion is recorded (as
# OllamaPool's is), the chat inside it is not.
OLLAMA_LLMS = frozenset({"OllamaPool_llm", "Ollama_llm"})
_COMPLETION_VIA_CHAT = frozenset({"Ollama_llm"})
# Embedding classes whose calls the framework's embedding events describe. OllamaPoolEmbedding is
# not one: it reports each pool call itself (PoolEmbeddingCallEvent), with tokens and attempts.
OLLAMA_EMBEDDINGS = frozenset({"OllamaEmbedding"})
# The span of an upstream completion whose inner chat is still to come, in the caller's context
# (the chat starts in the same thread or task, right after the completion).
_completion_span: ContextVar[str | None] = ContextVar("gleitzeit_completion_span", default=None)
# OpenTelemetry's error.type when the error's class is unknown (a span dropped without an ExceptionEvent).
UNKNOWN_ERROR = "_OTHER"


class PrometheusEventHandler(BaseEventHandler):
    """Records every LLM call of ``OllamaPool`` (and of LlamaIndex's ``Ollama``) and every
    pool call of ``OllamaPoolEmbedding`` in Prometheus::

        from llama_index.core.instrumentation import get_dispatcher
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        get_dispatcher().add_event_handler(PrometheusEventHandler(registry=registry))
        start_http_server(9464, registry=registry)  # /metrics

    A call's start, chunks and end (or its exception) are matched by span id, so concurrent
    calls from threads and tasks never mix. ``registry`` defaults to prometheus_client's global
    registry; one metric set exists per registry, shared with every other gleitzeit-llm
    instrumentation on it. ``chunk_gaps=False`` skips the per-chunk histogram on hot streaming
    paths. At most ``max_open_calls`` unfinished calls are remembered (streams that are never
    read to the end are forgotten oldest first).
    """

    registry: Any = Field(default=None, exclude=True, description="The prometheus_client registry.")
    chunk_gaps: bool = Field(default=True, description="Record the time between chunks of streams.")
    max_open_calls: int = Field(default=10_000, gt=0, description="Unfinished calls remembered at most.")

    # Open calls, their timing and what a finished call records live in the core, shared with
    # LangChain's callback handler; this class only reads LlamaIndex's events.
    _tracker: CallTracker = PrivateAttr()
    # Upstream embedding calls open under one span (a batch is several), matched first in first out.
    _embedding_calls: dict[str, deque[Hashable]] = PrivateAttr(default_factory=dict)

    def __init__(self, registry: Any = None, **kwargs: Any) -> None:
        super().__init__(registry=registry, **kwargs)
        self._tracker = CallTracker(registry)

    @classmethod
    def class_name(cls) -> str:
        return "PrometheusEventHandler"

    @property
    def metrics(self) -> CallMetrics:
        """The metric set this handler records into (one per registry)."""
        return self._tracker.metrics

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (LLMChatInProgressEvent, LLMCompletionInProgressEvent)):
            self._tracker.chunk(event.span_id, event.response.raw, record_gap=self.chunk_gaps)
        elif isinstance(event, LLMChatStartEvent):
            self._start(event, "chat")
        elif isinstance(event, LLMCompletionStartEvent):
            self._start(event, "text_completion")
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            self._end(event)
        elif isinstance(event, ExceptionEvent):
            self._fail(event.span_id, event.exception)
        elif isinstance(event, SpanDropEvent):
            self._fail(event.span_id, UNKNOWN_ERROR)
        elif isinstance(event, PoolEmbeddingCallEvent):
            self._embedding(event)
        elif isinstance(event, EmbeddingStartEvent):
            self._embedding_start(event)
        elif isinstance(event, EmbeddingEndEvent):
            self._embedding_end(event)

    def _fail(self, span_id: str | None, error: BaseException | str) -> None:
        self._tracker.fail(span_id, error)
        for key in self._embedding_calls.pop(span_id, ()) if span_id is not None else ():
            self._tracker.fail(key, error)

    # -- LLM calls --------------------------------------------------------------------------------

    def _start(self, event: LLMChatStartEvent | LLMCompletionStartEvent, operation: str) -> None:
        if event.span_id is None:
            return
        model_dict = event.model_dict or {}
        llm_class = model_dict.get("class_name")
        if llm_class not in OLLAMA_LLMS:
            return
        if llm_class in _COMPLETION_VIA_CHAT:
            if operation == "text_completion":
                _completion_span.set(event.span_id)
            elif (outer := _completion_span.get()) is not None:
                _completion_span.set(None)
                if self._tracker.is_open(outer):
                    return  # the chat an upstream completion runs: the completion is the call
        model = event.additional_kwargs.get("model") or model_dict.get("model_name") or ""
        self._tracker.start(
            event.span_id,
            operation,
            str(model),
            server_url=model_dict.get("base_url"),  # where a payload names it (upstream's do not)
            keep_at_most=self.max_open_calls,
        )

    def _end(self, event: LLMChatEndEvent | LLMCompletionEndEvent) -> None:
        call = self._tracker.pop(event.span_id)
        if call is None:
            return
        raw = event.response.raw if event.response is not None else None
        pool = pool_of(raw)
        usage = _get(raw, "usage")
        usage = usage if isinstance(usage, Mapping) else {}
        self._tracker.record_success(
            call,
            pool,
            model=pool.get("requested_model"),
            response_model=_get(raw, "model"),
            input_tokens=_first(_get(raw, "prompt_eval_count"), usage.get("prompt_tokens")),
            output_tokens=_first(_get(raw, "eval_count"), usage.get("completion_tokens")),
        )

    # -- embeddings -------------------------------------------------------------------------------

    def _embedding(self, event: PoolEmbeddingCallEvent) -> None:
        # One event per finished pool call: nothing is open, so it goes straight to the metrics.
        address, port = server_of(event.instance_url)
        self._tracker.metrics.record_call(
            operation="embeddings",
            error=event.error_type,
            server_address=address,
            server_port=port,
            **{name: getattr(event, name) for name in _EMBEDDING_FACTS},
        )

    def _embedding_start(self, event: EmbeddingStartEvent) -> None:
        model_dict = event.model_dict or {}
        if event.span_id is None or model_dict.get("class_name") not in OLLAMA_EMBEDDINGS:
            return
        calls = self._embedding_calls.setdefault(event.span_id, deque())
        key = (event.span_id, event.id_)
        calls.append(key)
        self._tracker.start(
            key,
            "embeddings",
            str(model_dict.get("model_name") or ""),
            server_url=model_dict.get("base_url"),  # where a payload names it (upstream's do not)
            keep_at_most=self.max_open_calls,
        )

    def _embedding_end(self, event: EmbeddingEndEvent) -> None:
        calls = self._embedding_calls.get(event.span_id) if event.span_id is not None else None
        if not calls:
            return
        call = self._tracker.pop(calls.popleft())
        if not calls:
            del self._embedding_calls[event.span_id]
        if call is not None:
            # Upstream OllamaEmbedding returns vectors only: no token counts, no serving instance.
            self._tracker.record_success(call, {})

    def __repr__(self) -> str:
        return f"PrometheusEventHandler(registry={self._tracker.metrics.registry!r})"


# PoolEmbeddingCallEvent's fields that CallMetrics.record_call takes under the same name.
_EMBEDDING_FACTS = (
    "model",
    "response_model",
    "duration",
    "instance",
    "input_tokens",
    "attempts",
    "fallback_model",
)


def _get(raw: Any, key: str) -> Any:
    if isinstance(raw, Mapping):
        return raw.get(key)
    return getattr(raw, key, None)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
