"""Prometheus metric definitions shared by every instrumentation of gleitzeit-llm.

Per-call metrics use the OpenTelemetry GenAI semantic conventions in Prometheus form
(``gen_ai.client.operation.duration`` -> ``gen_ai_client_operation_duration_seconds``, with the
conventions' bucket boundaries); the pool's own per-call facts are ``gleitzeit_call_*``. The
LangChain callback handler and the LlamaIndex event handler both record through
:class:`CallMetrics`, so the two frameworks produce the same series with the same meaning.

Labels are bounded: operation, provider, the requested model (the operator's model set), the
serving instance id (the pool's configuration) and the error class name. Never prompts, run
ids or URLs.

Requires ``prometheus-client`` (``pip install gleitzeit-llm[prometheus]``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

__all__ = [
    "ATTEMPTS",
    "CALLS",
    "DURATION_BUCKETS",
    "FAILOVERS",
    "FALLBACKS",
    "OPERATION_DURATION",
    "TIME_PER_OUTPUT_CHUNK",
    "TIME_TO_FIRST_CHUNK",
    "TOKEN_BUCKETS",
    "TOKEN_USAGE",
    "CallMetrics",
]

OPERATION_DURATION = "gen_ai_client_operation_duration_seconds"
TOKEN_USAGE = "gen_ai_client_token_usage"
TIME_TO_FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds"
TIME_PER_OUTPUT_CHUNK = "gen_ai_client_operation_time_per_output_chunk_seconds"
CALLS = "gleitzeit_calls"  # exposed as gleitzeit_calls_total
ATTEMPTS = "gleitzeit_call_attempts"
FAILOVERS = "gleitzeit_call_failovers"  # exposed as gleitzeit_call_failovers_total
FALLBACKS = "gleitzeit_call_fallbacks"  # exposed as gleitzeit_call_fallbacks_total

# Bucket boundaries the GenAI semantic conventions recommend.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
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
_CALL_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gleitzeit_instance")


class CallMetrics:
    """The per-call metrics on one registry; :meth:`on` returns the shared set for a registry.

    ``operation`` is ``chat``, ``text_completion`` or ``embeddings`` (the conventions' names).
    """

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, CallMetrics] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def histogram(name: str, buckets: Sequence[float], *labels: str) -> Histogram:
            return Histogram(name, _HELP[name], [*_CALL_LABELS, *labels], buckets=buckets, registry=registry)

        def counter(name: str, *labels: str) -> Counter:
            return Counter(name, _HELP[name], [*_CALL_LABELS, *labels], registry=registry)

        self.duration = histogram(OPERATION_DURATION, DURATION_BUCKETS, "error_type")
        self.tokens = histogram(TOKEN_USAGE, TOKEN_BUCKETS, "gen_ai_token_type")
        self.ttfc = histogram(TIME_TO_FIRST_CHUNK, DURATION_BUCKETS)
        self.tpoc = histogram(TIME_PER_OUTPUT_CHUNK, CHUNK_BUCKETS)
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
        error: BaseException | str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        time_to_first_chunk: float | None = None,
        attempts: int | None = None,
        fallback_model: str | None = None,
    ) -> None:
        """Record one finished call (success when ``error`` is None)."""
        base = (operation, PROVIDER, model or "", instance or "")
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
            self.fallbacks.labels(*base, fallback_model).inc()

    def record_chunk_gap(
        self, *, operation: str, model: str | None, instance: str | None, gap: float
    ) -> None:
        """Record the time between two chunks of a streaming call."""
        self.tpoc.labels(operation, PROVIDER, model or "", instance or "").observe(gap)

    def __repr__(self) -> str:
        return f"CallMetrics(registry={self.registry!r})"
