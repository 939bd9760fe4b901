"""Prometheus metric definitions shared by every instrumentation of gleitzeit-llm.

Per-call metrics use the OpenTelemetry GenAI semantic conventions in Prometheus form
(``gen_ai.client.operation.duration`` -> ``gen_ai_client_operation_duration_seconds``, with the
conventions' bucket boundaries); the pool's own per-call facts are ``gleitzeit_call_*``. The
LangChain callback handler and the LlamaIndex event handler both record through
:class:`CallMetrics`, so the two frameworks produce the same series with the same meaning.

Labels are bounded: operation, provider, the requested and the answering model (the operator's
model set, in the pool's normal form), the serving instance id and its host and port (the pool's
configuration) and the error class name. Never prompts, run ids or URLs. The pool metrics of
:mod:`~gleitzeit_llm.observability.prometheus` use the same label names and values
(``gleitzeit_instance``, ``gen_ai_request_model``, ``gen_ai_token_type``), so the two join.

Requires ``prometheus-client`` (``pip install gleitzeit-llm[prometheus]``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from functools import lru_cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from gleitzeit_llm.ollama.names import model_key

__all__ = [
    "ATTEMPTS",
    "CALLS",
    "CALL_LABELS",
    "DURATION_BUCKETS",
    "FAILOVERS",
    "FALLBACKS",
    "OPERATION_DURATION",
    "TIME_PER_OUTPUT_CHUNK",
    "TIME_TO_FIRST_CHUNK",
    "TOKEN_BUCKETS",
    "TOKEN_USAGE",
    "CallMetrics",
    "model_label",
]

OPERATION_DURATION = "gen_ai_client_operation_duration_seconds"
TOKEN_USAGE = "gen_ai_client_token_usage"
TIME_TO_FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds"
TIME_PER_OUTPUT_CHUNK = "gen_ai_client_operation_time_per_output_chunk_seconds"
CALLS = "gleitzeit_calls"  # exposed as gleitzeit_calls_total
ATTEMPTS = "gleitzeit_call_attempts"
FAILOVERS = "gleitzeit_call_failovers"  # exposed as gleitzeit_call_failovers_total
FALLBACKS = "gleitzeit_call_fallbacks"  # exposed as gleitzeit_call_fallbacks_total

# Bucket boundaries the GenAI semantic conventions recommend for client metrics: every client
# duration (operation, time to first chunk, time per output chunk) and the token usage. (The
# conventions' server metrics, e.g. gen_ai.server.time_per_output_token, use finer ones up to 2.5 s:
# not ours, this is the client side.)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 8)

PROVIDER = "ollama"
_HELP = {
    OPERATION_DURATION: "GenAI operation duration: from the call until its last chunk, failovers included.",
    TOKEN_USAGE: "Input and output tokens per call, as Ollama counted them.",
    TIME_TO_FIRST_CHUNK: "Time from the call until its first chunk (streaming calls).",
    TIME_PER_OUTPUT_CHUNK: "Time between two chunks after the first one (streaming calls).",
    CALLS: "Calls by outcome (success or error) and the error's class.",
    ATTEMPTS: "Attempts the pool needed for one call (1 = no failover).",
    FAILOVERS: "Attempts beyond the first: each is a failover to another instance.",
    FALLBACKS: "Calls answered by the fallback model instead of the requested one.",
}
#: The labels of every per-call series, in this order (the pool metrics share the names they have).
CALL_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "server_address",
    "server_port",
    "gleitzeit_instance",
)


@lru_cache(maxsize=1024)
def model_label(name: str | None) -> str:
    """A model name as a label value: the pool's normal form (``llama3.2`` -> ``llama3.2:latest``),
    as the pool metrics write it, so the two families join; ``""`` for none."""
    if not name:
        return ""
    try:
        return model_key(name)
    except ValueError:  # not a model name Ollama would accept: keep it as given
        return name


class CallMetrics:
    """The per-call metrics on one registry; :meth:`on` returns the shared set for a registry.

    ``operation`` is ``chat``, ``text_completion`` or ``embeddings`` (the conventions' names).
    """

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, CallMetrics] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def histogram(name: str, buckets: Sequence[float], *labels: str) -> Histogram:
            return Histogram(name, _HELP[name], [*CALL_LABELS, *labels], buckets=buckets, registry=registry)

        def counter(name: str, *labels: str) -> Counter:
            return Counter(name, _HELP[name], [*CALL_LABELS, *labels], registry=registry)

        self.duration = histogram(OPERATION_DURATION, DURATION_BUCKETS, "error_type")
        self.tokens = histogram(TOKEN_USAGE, TOKEN_BUCKETS, "gen_ai_token_type")
        self.ttfc = histogram(TIME_TO_FIRST_CHUNK, DURATION_BUCKETS)
        self.tpoc = histogram(TIME_PER_OUTPUT_CHUNK, DURATION_BUCKETS)
        self.calls = counter(CALLS, "outcome", "error_type")
        self.attempts = histogram(ATTEMPTS, ATTEMPT_BUCKETS)
        self.failovers = counter(FAILOVERS)
        self.fallbacks = counter(FALLBACKS, "gleitzeit_fallback_model")

    @classmethod
    def on(cls, registry: CollectorRegistry | None = None) -> CallMetrics:
        """The metric set of ``registry`` (default: prometheus_client's global registry), created once."""
        registry = REGISTRY if registry is None else registry
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found

    def record_call(
        self,
        *,
        operation: str,
        model: str | None,
        duration: float,
        instance: str | None = None,
        response_model: str | None = None,
        server_address: str | None = None,
        server_port: int | str | None = None,
        error: BaseException | str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        time_to_first_chunk: float | None = None,
        attempts: int | None = None,
        fallback_model: str | None = None,
    ) -> None:
        """Record one finished call (success when ``error`` is None)."""
        base = self.labels(operation, model, instance, response_model, server_address, server_port)
        error_type = "" if error is None else (error if isinstance(error, str) else type(error).__name__)
        self.duration.labels(*base, error_type).observe(duration)
        self.calls.labels(*base, "error" if error is not None else "success", error_type).inc()
        if input_tokens is not None:
            self.tokens.labels(*base, "input").observe(input_tokens)
        if output_tokens is not None:
            self.tokens.labels(*base, "output").observe(output_tokens)
        if time_to_first_chunk is not None:
            self.ttfc.labels(*base).observe(time_to_first_chunk)
        if attempts is not None:
            self.attempts.labels(*base).observe(attempts)
            if attempts > 1:
                self.failovers.labels(*base).inc(attempts - 1)
        if fallback_model:
            self.fallbacks.labels(*base, model_label(fallback_model)).inc()

    @staticmethod
    def labels(
        operation: str,
        model: str | None,
        instance: str | None = None,
        response_model: str | None = None,
        server_address: str | None = None,
        server_port: int | str | None = None,
    ) -> tuple[str, ...]:
        """The values of :data:`CALL_LABELS` for one call (``""`` for what is unknown)."""
        return (
            operation,
            PROVIDER,
            model_label(model),
            model_label(response_model),
            server_address or "",
            "" if server_port is None else str(server_port),
            instance or "",
        )

    def record_chunk_gaps(self, labels: Sequence[str], gaps: Iterable[float]) -> None:
        """Record the times between chunks of a streaming call (``labels`` from :meth:`labels`)."""
        histogram = self.tpoc.labels(*labels)
        for gap in gaps:
            histogram.observe(gap)

    def __repr__(self) -> str:
        return f"CallMetrics(registry={self.registry!r})"
