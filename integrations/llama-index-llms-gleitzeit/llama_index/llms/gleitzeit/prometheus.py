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
asked for (per-call ``model=`` included) and ``gleitzeit_instance`` (the instance that served
the call, from ``response.raw["pool"]``). Never prompts, span ids or URLs.

Requires ``prometheus-client`` (``pip install gleitzeit-llm[prometheus]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
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

from gleitzeit_llm.observability.framework import CallTracker, pool_of
from gleitzeit_llm.observability.metrics import CallMetrics
from llama_index.llms.gleitzeit.events import PoolEmbeddingCallEvent

__all__ = ["PrometheusEventHandler"]

# LLM classes (their class_name()) served by Ollama, so the provider label stays true. Ollama's
# own LLM implements completion as a chat, whose events are recorded: its completion events are not.
OLLAMA_LLMS = frozenset({"OllamaPool_llm", "Ollama_llm"})
_COMPLETION_VIA_CHAT = frozenset({"Ollama_llm"})
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
            self._tracker.fail(event.span_id, event.exception)
        elif isinstance(event, SpanDropEvent):
            self._tracker.fail(event.span_id, UNKNOWN_ERROR)
        elif isinstance(event, PoolEmbeddingCallEvent):
            self._embedding(event)

    # -- LLM calls --------------------------------------------------------------------------------

    def _start(self, event: LLMChatStartEvent | LLMCompletionStartEvent, operation: str) -> None:
        if event.span_id is None:
            return
        model_dict = event.model_dict or {}
        llm_class = model_dict.get("class_name")
        if llm_class not in OLLAMA_LLMS or (operation != "chat" and llm_class in _COMPLETION_VIA_CHAT):
            return
        model = event.additional_kwargs.get("model") or model_dict.get("model_name") or ""
        self._tracker.start(event.span_id, operation, str(model), keep_at_most=self.max_open_calls)

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
            input_tokens=_first(_get(raw, "prompt_eval_count"), usage.get("prompt_tokens")),
            output_tokens=_first(_get(raw, "eval_count"), usage.get("completion_tokens")),
        )

    # -- embeddings -------------------------------------------------------------------------------

    def _embedding(self, event: PoolEmbeddingCallEvent) -> None:
        # One event per finished pool call: nothing is open, so it goes straight to the metrics.
        self._tracker.metrics.record_call(
            operation="embeddings",
            error=event.error_type,
            **{name: getattr(event, name) for name in _EMBEDDING_FACTS},
        )

    def __repr__(self) -> str:
        return f"PrometheusEventHandler(registry={self._tracker.metrics.registry!r})"


# PoolEmbeddingCallEvent's fields that CallMetrics.record_call takes under the same name.
_EMBEDDING_FACTS = ("model", "duration", "instance", "input_tokens", "attempts", "fallback_model")


def _get(raw: Any, key: str) -> Any:
    if isinstance(raw, Mapping):
        return raw.get(key)
    return getattr(raw, key, None)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
