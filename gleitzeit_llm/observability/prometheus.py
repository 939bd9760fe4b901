"""Prometheus exporter for a pool: live instance state at scrape time, counters from pool events.

::

    from gleitzeit_llm.observability.prometheus import instrument, start_metrics_server

    metrics = instrument(provider)           # a provider, manager or GleitzeitClient
    server = start_metrics_server(9464)      # http://127.0.0.1:9464/metrics
    ...
    server.close()
    metrics.close()

Two sources, so that nothing is counted twice:

* **Gauges** (state, breaker, in-flight, models loaded, ...) are read from the pool when
  Prometheus scrapes, by a collector: nothing is stored, a removed instance disappears.
* **Counters and histograms** (requests by outcome, failovers, fallbacks, cold loads, breaker
  transitions, latencies) are fed by the pool's events, one increment per event. The collector
  never re-adds the pool's running totals on a scrape, which is the double counting of the
  guide's snippet (``inc(total)`` on every export).

Labels are bounded: instance ids (the configuration), model names (capped, see
:data:`MAX_MODEL_LABELS`), outcome and state enums. Never URLs, prompts or run ids. The metric
reference is ``docs/metrics.md``. Requires ``prometheus-client``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gleitzeit_llm.manager import OllamaPoolManager
from gleitzeit_llm.observability.events import (
    BreakerStateChanged,
    FailoverEvent,
    FallbackEvent,
    HealthStateChanged,
    PoolEvent,
    RequestFinished,
)
from gleitzeit_llm.observability.framework import server_of
from gleitzeit_llm.observability.metrics import DURATION_BUCKETS

__all__ = [
    "MAX_MODEL_LABELS",
    "OTHER_MODEL",
    "MetricsServer",
    "PoolCollector",
    "PoolMetrics",
    "instrument",
    "start_metrics_server",
]

#: Distinct model names a PoolMetrics uses as label values; further names become :data:`OTHER_MODEL`
#: (callers choose model names, and a typo must not grow the series without bound).
MAX_MODEL_LABELS = 100
OTHER_MODEL = "__other__"

# The label names the per-call metrics (metrics.CALL_LABELS) use for the same things, so the two
# families join without label_replace. Not ``instance``: Prometheus sets that label on every scraped
# series (the exporter's address) and renames a clashing one to ``exported_instance``.
INSTANCE = "gleitzeit_instance"
MODEL = "gen_ai_request_model"
TOKEN_TYPE = "gen_ai_token_type"

_INSTANCE_STATES = ("healthy", "degraded", "unhealthy", "unknown")
_CIRCUIT_STATES = ("closed", "open", "half_open")


def _manager_of(pool: Any) -> OllamaPoolManager:
    """The OllamaPoolManager behind a manager, provider or GleitzeitClient."""
    for candidate in (
        pool,
        getattr(pool, "manager", None),
        getattr(getattr(pool, "provider", None), "manager", None),
    ):
        if isinstance(candidate, OllamaPoolManager):
            return candidate
    raise TypeError(
        f"expected an OllamaPoolManager, OllamaPoolProvider or GleitzeitClient, got {type(pool).__name__}"
    )


class PoolCollector(Collector):
    """Gauges over the live pool, computed from ``manager.status()`` at every scrape."""

    def __init__(self, manager: OllamaPoolManager) -> None:
        self._manager = manager

    def describe(self) -> Iterable[Any]:
        # Names only: registering must not read the pool.
        return list(self._families())

    def collect(self) -> Iterable[Any]:
        status = self._manager.status()
        families = self._families()
        (
            state,
            circuit,
            in_flight,
            model_in_flight,
            max_concurrent,
            loaded_count,
            model_loaded,
            installed_count,
            failures,
            ttft,
            error_ratio,
            info,
            checks,
            waiting,
            shared_up,
            concurrency_limit,
        ) = families
        for instance, snap in status["instances"].items():
            for name in _INSTANCE_STATES:
                state.add_metric([instance, name], 1.0 if snap["state"] == name else 0.0)
            for name in _CIRCUIT_STATES:
                circuit.add_metric([instance, name], 1.0 if snap["circuit_state"] == name else 0.0)
            in_flight.add_metric([instance], snap["active_requests"])
            for model, count in sorted(snap["active_by_model"].items()):
                model_in_flight.add_metric([instance, model], count)
            max_concurrent.add_metric([instance], snap["max_concurrent"])
            loaded_count.add_metric([instance], len(snap["models_loaded"]))
            for model in snap["models_loaded"]:
                model_loaded.add_metric([instance, model], 1.0)
            if snap["models_installed"] is not None:
                installed_count.add_metric([instance], len(snap["models_installed"]))
            failures.add_metric([instance], snap["consecutive_failures"])
            if snap["ttft_estimate"] is not None:
                ttft.add_metric([instance], snap["ttft_estimate"])
            error_ratio.add_metric([instance], snap["error_rate"] / 100.0)
            address, port = server_of(snap.get("url"))
            info.add_metric(
                [instance, snap["version"] or "", address, "" if port is None else str(port)], 1.0
            )
            probes, probe_failures = self._probe_counts(instance)
            checks.add_metric([instance, "ok"], probes - probe_failures)
            checks.add_metric([instance, "failed"], probe_failures)
            for model, limit in (snap.get("concurrency_limits") or {}).items():
                concurrency_limit.add_metric([instance, model], limit)
        waiting.add_metric([], status["waiting_requests"])
        shared = status.get("shared_state")
        if shared is not None:  # only pools configured with shared_state have the series
            shared_up.add_metric([], 1.0 if shared["up"] else 0.0)
        return families

    def _probe_counts(self, instance: str) -> tuple[int, int]:
        try:
            metrics = self._manager.get(instance).metrics
        except KeyError:  # removed between status() and now
            return 0, 0
        return metrics.probes, metrics.probe_failures

    @staticmethod
    def _families() -> list[Any]:
        g, c = GaugeMetricFamily, CounterMetricFamily
        return [
            g(
                "gleitzeit_instance_state",
                "Health state of the instance (1 for the current state, 0 for the others).",
                labels=[INSTANCE, "state"],
            ),
            g(
                "gleitzeit_instance_circuit_state",
                "Circuit breaker state of the instance (1 for the current state, 0 for the others).",
                labels=[INSTANCE, "state"],
            ),
            g("gleitzeit_instance_in_flight", "Requests in flight on the instance.", labels=[INSTANCE]),
            g(
                "gleitzeit_instance_model_in_flight",
                "Requests in flight on the instance, per model (only models with requests in flight).",
                labels=[INSTANCE, MODEL],
            ),
            g(
                "gleitzeit_instance_max_concurrent",
                "Configured limit of requests in flight on the instance.",
                labels=[INSTANCE],
            ),
            g(
                "gleitzeit_instance_models_loaded",
                "Models resident in the instance's memory, as /api/ps and served requests say.",
                labels=[INSTANCE],
            ),
            g(
                "gleitzeit_instance_model_loaded",
                "1 for each model resident on the instance.",
                labels=[INSTANCE, MODEL],
            ),
            g(
                "gleitzeit_instance_models_installed",
                "Models installed on the instance (/api/tags); absent until the first health check.",
                labels=[INSTANCE],
            ),
            g(
                "gleitzeit_instance_consecutive_failures",
                "Failures in a row that the instance's circuit breaker has counted.",
                labels=[INSTANCE],
            ),
            g(
                "gleitzeit_instance_ttft_estimate_seconds",
                "The pool's decaying estimate of time to first token (peak-EWMA); absent without data.",
                labels=[INSTANCE],
            ),
            g(
                "gleitzeit_instance_recent_error_ratio",
                "Failed share (0..1) of the instance's last 100 counted attempts.",
                labels=[INSTANCE],
            ),
            g(
                "gleitzeit_instance_info",
                "Always 1; the Ollama version the instance reports.",
                labels=[INSTANCE, "version", "server_address", "server_port"],
            ),
            c(
                "gleitzeit_instance_health_checks",
                "Health checks of the instance by outcome (ok or failed).",
                labels=[INSTANCE, "outcome"],
            ),
            g(
                "gleitzeit_pool_waiting_requests",
                "Calls waiting in the pool's queue for a free slot.",
                labels=[],
            ),
            g(
                "gleitzeit_shared_state_up",
                "1 while the pool's shared state (Redis) answers, 0 while this process runs on local state.",
                labels=[],
            ),
            g(
                "gleitzeit_concurrency_limit",
                "Learned limit of requests in flight per instance and model (adaptive_concurrency).",
                labels=[INSTANCE, MODEL],
            ),
        ]


class _BoundedNames:
    """Model names as label values: the first ``limit`` distinct ones, then :data:`OTHER_MODEL`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str | None) -> str:
        if not name:
            return ""
        if name in self._seen:
            return name
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(name)
                return name
        return OTHER_MODEL


class PoolMetrics:
    """A pool's Prometheus metrics on one registry: the live-state collector plus event-fed counters.

    Use :func:`instrument`, which returns the existing PoolMetrics when the same pool is
    instrumented on the same registry again. :meth:`close` unsubscribes and unregisters.
    """

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, PoolMetrics] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(
        self, pool: Any, registry: CollectorRegistry | None = None, *, max_models: int = MAX_MODEL_LABELS
    ) -> None:
        self.manager = _manager_of(pool)
        self.registry = REGISTRY if registry is None else registry
        self._model = _BoundedNames(max_models)
        self._registered: list[Any] = []
        try:
            self.collector = self._register(PoolCollector(self.manager))
            self.requests = self._register(
                Counter(
                    "gleitzeit_pool_requests",
                    "Attempts on an instance by outcome: success, failure, busy, model_missing, "
                    "caller_error or cancelled (a call that failed over counts once per instance tried).",
                    [INSTANCE, MODEL, "outcome"],
                    registry=None,
                )
            )
            self.attempt_duration = self._register(
                Histogram(
                    "gleitzeit_pool_attempt_duration_seconds",
                    "Duration of one attempt on one instance, from the reserved slot to the last chunk.",
                    [INSTANCE, "outcome"],
                    buckets=DURATION_BUCKETS,
                    registry=None,
                )
            )
            self.time_to_first_chunk = self._register(
                Histogram(
                    "gleitzeit_pool_time_to_first_chunk_seconds",
                    "Reserved slot to first chunk, for successful attempts (cold loads included).",
                    [INSTANCE, MODEL],
                    buckets=DURATION_BUCKETS,
                    registry=None,
                )
            )
            self.tokens = self._register(
                Counter(
                    "gleitzeit_pool_tokens",
                    "Tokens of successful attempts as Ollama counted them, by type (input or output).",
                    [INSTANCE, MODEL, TOKEN_TYPE],
                    registry=None,
                )
            )
            self.cold_loads = self._register(
                Counter(
                    "gleitzeit_pool_cold_loads",
                    "Successful attempts that had to load the model first (load_duration above 0.5 s).",
                    [INSTANCE, MODEL],
                    registry=None,
                )
            )
            self.failovers = self._register(
                Counter(
                    "gleitzeit_pool_failovers",
                    "Attempts that failed on the instance with an instance error (pool failover events).",
                    [INSTANCE],
                    registry=None,
                )
            )
            self.fallbacks = self._register(
                Counter(
                    "gleitzeit_pool_fallbacks",
                    "Calls switched to their fallback model after the requested model failed everywhere.",
                    [MODEL, "gleitzeit_fallback_model"],
                    registry=None,
                )
            )
            self.breaker_transitions = self._register(
                Counter(
                    "gleitzeit_pool_breaker_transitions",
                    "Circuit breaker transitions by the state entered (closed, open, half_open).",
                    [INSTANCE, "state"],
                    registry=None,
                )
            )
            self.health_transitions = self._register(
                Counter(
                    "gleitzeit_pool_health_transitions",
                    "Health state transitions by the state entered (healthy, degraded, unhealthy, unknown).",
                    [INSTANCE, "state"],
                    registry=None,
                )
            )
        except ValueError as exc:  # a name is already registered
            self._unregister_all()
            raise ValueError(
                f"cannot register the pool metrics on this registry: {exc}; instrument one pool per "
                "registry (pass registry=CollectorRegistry() for another pool)"
            ) from None
        self._unsubscribe: Callable[[], None] | None = self.manager.events.subscribe(self.observe)

    def _register(self, collector: Any) -> Any:
        self.registry.register(collector)
        self._registered.append(collector)
        return collector

    def _unregister_all(self) -> None:
        for collector in reversed(self._registered):
            self.registry.unregister(collector)
        self._registered.clear()

    def observe(self, event: PoolEvent) -> None:
        """Count one pool event (subscribed to the pool's event bus)."""
        if isinstance(event, RequestFinished):
            model = self._model(event.model)
            self.requests.labels(event.instance, model, event.outcome).inc()
            self.attempt_duration.labels(event.instance, event.outcome).observe(event.duration)
            if event.outcome == "success":
                if event.ttft is not None:
                    self.time_to_first_chunk.labels(event.instance, model).observe(event.ttft)
                if event.prompt_tokens:
                    self.tokens.labels(event.instance, model, "input").inc(event.prompt_tokens)
                if event.output_tokens:
                    self.tokens.labels(event.instance, model, "output").inc(event.output_tokens)
                if event.cold_load:
                    self.cold_loads.labels(event.instance, model).inc()
        elif isinstance(event, FailoverEvent):
            self.failovers.labels(event.from_instance).inc()
        elif isinstance(event, FallbackEvent):
            self.fallbacks.labels(self._model(event.model), self._model(event.fallback_model)).inc()
        elif isinstance(event, BreakerStateChanged):
            self.breaker_transitions.labels(event.instance, event.new).inc()
        elif isinstance(event, HealthStateChanged):
            self.health_transitions.labels(event.instance, event.new).inc()

    def close(self) -> None:
        """Stop counting events and remove every metric of this pool from the registry (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._unregister_all()
        with PoolMetrics._lock:
            if PoolMetrics._by_registry.get(self.registry) is self:
                del PoolMetrics._by_registry[self.registry]

    def __enter__(self) -> PoolMetrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PoolMetrics(manager={self.manager!r})"


def instrument(pool: Any, registry: CollectorRegistry | None = None) -> PoolMetrics:
    """Export ``pool``'s metrics on ``registry`` (default: prometheus_client's global registry).

    Idempotent: instrumenting the same pool on the same registry again returns the same
    :class:`PoolMetrics`. A different pool on the same registry raises ``ValueError`` (the
    series would collide); give it its own ``CollectorRegistry``.
    """
    manager = _manager_of(pool)
    registry = REGISTRY if registry is None else registry
    with PoolMetrics._lock:
        found = PoolMetrics._by_registry.get(registry)
        if found is not None:
            if found.manager is manager:
                return found
            raise ValueError(
                "this registry already exports another pool's metrics; instrument one pool per "
                "registry (pass registry=CollectorRegistry())"
            )
        metrics = PoolMetrics(manager, registry)
        PoolMetrics._by_registry[registry] = metrics
        return metrics


class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; :meth:`close` stops it (also as a context manager)."""

    def __init__(self, server: Any, thread: threading.Thread, addr: str) -> None:
        self._server = server
        self._thread = thread
        self.addr = addr
        self.port: int = server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer(url={self.url!r})"


def start_metrics_server(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default: the global one) at ``http://addr:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (read it from ``.port``). Listens on loopback unless told
    otherwise: pass ``addr="0.0.0.0"`` for Prometheus on another host.
    """
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=addr, registry=REGISTRY if registry is None else registry)
    return MetricsServer(server, thread, addr)
