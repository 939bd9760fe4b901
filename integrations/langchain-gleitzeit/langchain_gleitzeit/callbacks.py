"""``PrometheusCallbackHandler``: per-call Prometheus metrics of LangChain runs on Ollama.

Metrics are recorded through :class:`gleitzeit_llm.observability.framework.CallTracker` into
:class:`gleitzeit_llm.observability.metrics.CallMetrics`, as the LlamaIndex handler does, so both
frameworks produce the same series:

* ``gen_ai_client_operation_duration_seconds`` (histogram; ``error_type`` label),
* ``gen_ai_client_token_usage`` (histogram; ``gen_ai_token_type`` = ``input`` | ``output``),
* ``gen_ai_client_operation_time_to_first_chunk_seconds`` and
  ``gen_ai_client_operation_time_per_output_chunk_seconds`` (streamed calls),
* ``gleitzeit_calls_total`` (``outcome``, ``error_type``), ``gleitzeit_call_attempts``,
  ``gleitzeit_call_failovers_total`` and ``gleitzeit_call_fallbacks_total``.

Labels: ``gen_ai_operation_name`` (``chat`` or ``text_completion``), ``gen_ai_provider_name``,
``gen_ai_request_model`` (the model asked for, per-call overrides included),
``gen_ai_response_model`` (the model that answered), ``server_address``, ``server_port`` and
``gleitzeit_instance`` (the instance that served the call and its host and port, from
``ChatOllamaPool``'s ``response_metadata["pool"]``; empty for ``ChatOllama``, whose callbacks are
not told its ``base_url``). Never prompts, run ids or URLs.

Embeddings are not recorded: LangChain's ``Embeddings`` interface runs no callbacks, so no handler
sees ``OllamaEmbeddings`` or ``OllamaPoolEmbeddings`` calls (the pool metrics count the latter's
attempts).

Requires ``prometheus-client`` (``pip install gleitzeit-llm[prometheus]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from gleitzeit_llm.observability.framework import CallTracker, pool_of

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PrometheusCallbackHandler"]

_PROVIDER = "ollama"


class PrometheusCallbackHandler(BaseCallbackHandler):
    """Records each Ollama chat or completion run (``ChatOllamaPool``, ``ChatOllama``, ...) in Prometheus.

    ::

        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        handler = PrometheusCallbackHandler(registry=registry)
        chain.invoke(inputs, config={"callbacks": [handler]})
        start_http_server(9464, registry=registry)  # /metrics

    Works in sync and async runs (it only does bookkeeping, so it runs inline), from many threads
    at once. ``registry`` defaults to prometheus_client's global registry; one metric set exists
    per registry, shared with every other gleitzeit-llm instrumentation on it. Runs of models whose
    provider is not Ollama (``ls_provider``) are ignored, so labels stay true. Set
    ``chunk_gaps=False`` to skip the per-chunk histogram on hot streaming paths.
    """

    run_inline = True  # bookkeeping only: never hop to an executor in async runs

    def __init__(self, registry: CollectorRegistry | None = None, *, chunk_gaps: bool = True) -> None:
        super().__init__()
        self.chunk_gaps = chunk_gaps
        # Open runs, their timing and what a finished run records live in the core, shared with
        # the LlamaIndex event handler; this class only reads LangChain's shapes.
        self._tracker = CallTracker(registry)
        self.metrics = self._tracker.metrics

    # -- start -----------------------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, "chat", metadata, kwargs.get("invocation_params"))

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, "text_completion", metadata, kwargs.get("invocation_params"))

    def _start(
        self,
        run_id: UUID,
        operation: str,
        metadata: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
    ) -> None:
        metadata = metadata or {}
        if metadata.get("ls_provider") != _PROVIDER:
            return
        model = metadata.get("ls_model_name") or (params or {}).get("model") or ""
        self._tracker.start(run_id, operation, str(model))

    # -- chunks ----------------------------------------------------------------------------------

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        # The serving instance is known only at the end: the tracker holds the gaps until then, so
        # they carry the instance as the LlamaIndex handler's do.
        self._tracker.chunk(run_id, record_gap=self.chunk_gaps)

    # -- end -------------------------------------------------------------------------------------

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._tracker.pop(run_id)
        if run is None:
            return
        metadata, usage = _first_generation(response)
        self._tracker.record_success(
            run,
            pool_of(metadata),
            response_model=metadata.get("model_name") or metadata.get("model"),
            input_tokens=usage.get("input_tokens") if usage else metadata.get("prompt_eval_count"),
            output_tokens=usage.get("output_tokens") if usage else metadata.get("eval_count"),
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._tracker.fail(run_id, error)

    def __repr__(self) -> str:
        return f"PrometheusCallbackHandler(registry={self.metrics.registry!r})"


def _first_generation(response: LLMResult) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    """(response_metadata, usage_metadata) of the run's first generation."""
    generations: Sequence[Any] = response.generations[0] if response.generations else ()
    if not generations:
        return {}, None
    generation = generations[0]
    message = getattr(generation, "message", None)
    metadata: dict[str, Any] = dict(generation.generation_info or {})
    usage = None
    if message is not None:
        metadata.update(getattr(message, "response_metadata", None) or {})
        usage = getattr(message, "usage_metadata", None)
    return metadata, usage
