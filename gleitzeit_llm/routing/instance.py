"""One Ollama instance as the pool sees it: its configuration and everything learned about it.

State updates live here, next to the state (tower's ``load`` module): :meth:`OllamaInstance.record_outcome`
and :meth:`OllamaInstance.record_probe` apply the rules of :mod:`gleitzeit_llm.routing.learning`
and return what changed; strategies only read. All mutation happens under the owning pool's lock.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.ollama.names import model_key
from gleitzeit_llm.ollama.urls import redact_url
from gleitzeit_llm.routing import learning
from gleitzeit_llm.routing.breaker import CircuitBreaker, CircuitState
from gleitzeit_llm.routing.ewma import PeakEwma
from gleitzeit_llm.routing.transitions import InstanceState

if TYPE_CHECKING:
    from gleitzeit_llm.config import InstanceConfig
    from gleitzeit_llm.routing.concurrency import ModelLimits
    from gleitzeit_llm.routing.epoch import Epoch
    from gleitzeit_llm.routing.health import ProbeResult
    from gleitzeit_llm.routing.learning import Observation, Transitions

__all__ = ["InstanceMetrics", "InstanceState", "OllamaInstance"]

# How long the pool assumes a model stays resident after it served it, when /api/ps has not
# said otherwise: Ollama's default keep_alive.
DEFAULT_RESIDENCY = 300.0
# Latency samples kept for averages and percentiles.
WINDOW = 256
# Outcomes kept for the error rate.
OUTCOME_WINDOW = 100
# Prompts at least this long measure the prompt speed (a short one is mostly fixed overhead).
_RATE_SAMPLE_TOKENS = 512


@dataclass
class InstanceMetrics:
    """Counters and decaying statistics of one instance."""

    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    busy_rejections: int = 0
    cold_loads: int = 0
    probes: int = 0
    probe_failures: int = 0
    ttft: PeakEwma = field(default_factory=PeakEwma)  # seconds to the first chunk
    tpot: PeakEwma = field(default_factory=PeakEwma)  # seconds per output token
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=OUTCOME_WINDOW))
    probe_outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=OUTCOME_WINDOW))
    last_error: str | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None
    # Prompt tokens served and the share the server had cached, decaying (see observe_prompt_cache).
    prompt_tokens_seen: float = 0.0
    prompt_tokens_cached: float = 0.0
    prefill_rate_floor: float | None = None  # prompt tokens/s of the slowest long prompt seen

    @property
    def avg_response_time(self) -> float:
        return statistics.fmean(self.durations) if self.durations else 0.0

    def percentile(self, q: float) -> float:
        if not self.durations:
            return 0.0
        ordered = sorted(self.durations)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    def observe_prompt_cache(
        self, evaluated: int, cached: int | None, estimate: int | None, duration: float | None = None
    ) -> None:
        """Learn the prompt-cache hit rate from a final chunk (``evaluated`` is its
        ``prompt_eval_count``, ``duration`` its ``prompt_eval_duration`` in seconds).

        The server's cached-token count (``prompt_eval_cached_count``) where it sends one. Else a
        server that counted only the tokens it evaluated (far fewer than the prompt's estimated
        size) shows the cached rest; and one that counts the whole prompt, as Ollama does, shows
        the cache only in the time: the uncached tokens are the duration times the slowest
        prompt speed seen on a long prompt (a full miss). Older samples fade (each new one weighs
        5%), so the rate follows what the instance holds now.
        """
        if cached is not None:
            total, hit = max(evaluated, cached), cached
        elif estimate and evaluated < estimate // 2:
            total, hit = estimate, estimate - evaluated
        elif duration and evaluated > 0:
            if evaluated >= _RATE_SAMPLE_TOKENS:
                rate = evaluated / duration
                floor = self.prefill_rate_floor
                # The floor creeps up, so one slow moment (a busy box) does not stay the floor.
                self.prefill_rate_floor = rate if floor is None else min(rate, floor * 1.005)
            floor = self.prefill_rate_floor
            if floor is None:
                return
            total = evaluated
            hit = max(0, evaluated - round(duration * floor))
        else:
            return
        self.prompt_tokens_seen = self.prompt_tokens_seen * 0.95 + total
        self.prompt_tokens_cached = self.prompt_tokens_cached * 0.95 + hit

    @property
    def prompt_cache_hit_rate(self) -> float | None:
        """Share of recent prompt tokens the server had cached (0..1), None before any sample."""
        return self.prompt_tokens_cached / self.prompt_tokens_seen if self.prompt_tokens_seen else None

    @property
    def error_rate(self) -> float:
        """Failed share of the recent attempts, in percent."""
        if not self.outcomes:
            return 0.0
        return 100.0 * self.outcomes.count(False) / len(self.outcomes)

    @property
    def availability(self) -> float:
        """Share of recent health probes and requests that found the instance answering, in percent."""
        samples = len(self.probe_outcomes) + len(self.outcomes)
        if samples == 0:
            return 0.0
        ok = self.probe_outcomes.count(True) + self.outcomes.count(True)
        return 100.0 * ok / samples


class OllamaInstance:
    """Configuration plus run-time state of one Ollama server in the pool."""

    # Slots: the router reads a dozen attributes per instance per decision.
    __slots__ = (
        "_busy_until",
        "_state",
        "breaker",
        "busy_reason",
        "config",
        "configured_models",
        "connect_url",
        "consecutive_probe_failures",
        "consecutive_probe_successes",
        "epoch",
        "id",
        "in_flight",
        "in_flight_by_model",
        "installed_models",
        "limits",
        "loaded_models",
        "max_concurrent",
        "metrics",
        "missing_models",
        "priority",
        "removed",
        "tags",
        "url",
        "version",
        "weight",
    )

    def __init__(self, config: InstanceConfig, breaker: CircuitBreaker, epoch: Epoch | None = None) -> None:
        self.config = config
        # The pool's routing epoch (the breaker's unless given): state and busy marks move it.
        self.epoch = breaker.epoch if epoch is None else epoch
        self.id: str = config.id
        # What people see (status, logs, errors) never carries credentials; connecting uses
        # the configured URL as given.
        self.url: str = redact_url(config.url)
        self.connect_url: str = config.url
        self.max_concurrent: int = config.max_concurrent
        self.priority: int = config.priority
        self.weight: float = config.weight
        self.tags: frozenset[str] = frozenset(t.lower() for t in config.tags)
        # Models the operator pinned here; empty means "whatever the server has".
        self.configured_models: frozenset[str] = frozenset(model_key(m) for m in config.models)
        self.breaker = breaker
        self._state = InstanceState.UNKNOWN
        self.metrics = InstanceMetrics()
        self.in_flight = 0
        self.in_flight_by_model: dict[str, int] = {}
        # Learned per-model limits (load_balancing.adaptive_concurrency); None when off.
        self.limits: ModelLimits | None = None
        self.installed_models: frozenset[str] | None = None  # from /api/tags; None = not known yet
        self.loaded_models: dict[str, float] = {}  # model -> clock time it stays resident until
        # Spellings (spelling_key) answered 404 since the last /api/tags refresh: a 404 proves
        # only that this spelling cannot be resolved here (lookups may be case-sensitive).
        self.missing_models: set[str] = set()
        self.version: str | None = None
        self.removed = False
        self._busy_until = 0.0
        self.busy_reason: str | None = None  # why busy_until was set, for the status
        self.consecutive_probe_failures = 0
        self.consecutive_probe_successes = 0

    # Routing filters read these; setting them moves the routing epoch (the router's cache).

    @property
    def state(self) -> InstanceState:
        return self._state

    @state.setter
    def state(self, value: InstanceState) -> None:
        if value is not self._state:
            self._state = value
            self.epoch.bump()

    @property
    def busy_until(self) -> float:
        """After a 503/429: treated as full until this clock time."""
        return self._busy_until

    @busy_until.setter
    def busy_until(self, value: float) -> None:
        self._busy_until = value
        self.epoch.bump()

    # -- questions the router asks ------------------------------------------------------------

    def has_capacity(self) -> bool:
        return self.in_flight < self.max_concurrent

    def admits(self, model: str | None) -> bool:
        """Below the instance's cap and, with adaptive concurrency, below ``model``'s learned limit."""
        limits = self.limits
        return self.in_flight < self.max_concurrent and (
            limits is None or limits.admits(model, self.in_flight_by_model)
        )

    def utilisation(self) -> float:
        return self.in_flight / self.max_concurrent

    def may_serve(self, model: str | None, spelling: str | None = None) -> bool:
        """Whether the model can run here, as far as the pool knows: ``model`` is the model_key,
        ``spelling`` the spelling_key of the name sent (``model`` when not given)."""
        return model is None or (
            (model if spelling is None else spelling) not in self.missing_models
            and (not self.configured_models or model in self.configured_models)
            and (self.installed_models is None or model in self.installed_models)
        )

    def is_loaded(self, model: str, now: float) -> bool:
        until = self.loaded_models.get(model)
        return until is not None and until > now

    def is_installed(self, model: str) -> bool:
        if self.installed_models is not None:
            return model in self.installed_models
        return model in self.configured_models

    def routable(self, now: float) -> bool:
        """Healthy enough and breaker willing: eligible outside panic mode."""
        return self.state is not InstanceState.UNHEALTHY and self.breaker.allows(now)

    # -- bookkeeping --------------------------------------------------------------------------

    def acquire(self, model: str | None) -> None:
        self.in_flight += 1
        if model is not None:
            self.in_flight_by_model[model] = self.in_flight_by_model.get(model, 0) + 1

    def release(self, model: str | None) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if model is not None:
            left = self.in_flight_by_model.get(model, 0) - 1
            if left > 0:
                self.in_flight_by_model[model] = left
            else:
                self.in_flight_by_model.pop(model, None)

    def note_served(
        self, model: str | None, now: float, keep_alive: float | None = None, spelling: str | None = None
    ) -> bool:
        """The model answered here, so it is resident for its keep_alive from now.

        Returns True when this changed whether the model may be served here (this spelling had
        been marked missing), so cached routing filters must be forgotten.
        """
        if model is None:
            return False
        residency = DEFAULT_RESIDENCY if keep_alive is None else keep_alive
        if residency == 0:
            self.loaded_models.pop(model, None)
        else:
            self.loaded_models[model] = float("inf") if residency < 0 else now + residency
        answered = model if spelling is None else spelling
        if answered in self.missing_models:
            self.missing_models.discard(answered)
            return True
        return False

    def record_outcome(self, obs: Observation, now: float, max_retry_after: float) -> Transitions:
        """Learn from a finished attempt (see :func:`~gleitzeit_llm.routing.learning.record_outcome`);
        returns what changed. Releasing its slot is :meth:`release`."""
        return learning.record_outcome(self, obs, now, max_retry_after)

    def record_probe(self, result: ProbeResult, now: float) -> Transitions:
        """Learn from a health check round; returns what changed."""
        return learning.record_probe(self, result, now)

    def breaker_state(self, now: float) -> CircuitState:
        return self.breaker.state_at(now)

    def latency_estimate(self, now: float, expected_tokens: float) -> float | None:
        """Expected seconds to finish one more request (no queueing), or None without data."""
        ttft = self.metrics.ttft.value_at(now)
        if ttft is None:
            return None
        tpot = self.metrics.tpot.value_at(now) or 0.0
        return ttft + tpot * expected_tokens

    def snapshot(self, now: float) -> dict[str, Any]:
        """The guide's per-instance status fields, plus more (never changes state)."""
        m = self.metrics
        loaded = sorted(name for name, until in self.loaded_models.items() if until > now)
        breaker = self.breaker
        return {
            "id": self.id,
            "url": self.url,
            "state": self.state.value,
            "active_requests": self.in_flight,
            "total_requests": m.total_requests,
            "avg_response_time": round(m.avg_response_time, 6),
            "error_rate": round(m.error_rate, 3),
            "availability": round(m.availability, 3),
            "models_loaded": loaded,
            "circuit_breaker_open": breaker.state_at(now) is CircuitState.OPEN,
            # beyond the guide
            "circuit_state": breaker.state_at(now).value,
            "consecutive_failures": breaker.consecutive_failures,
            "max_concurrent": self.max_concurrent,
            "active_by_model": dict(self.in_flight_by_model),
            # learned per-model limits (load_balancing.adaptive_concurrency), None when off
            "concurrency_limits": self.limits.snapshot() if self.limits is not None else None,
            "successful_requests": m.successful_requests,
            "failed_requests": m.failed_requests,
            "busy_rejections": m.busy_rejections,
            "cold_loads": m.cold_loads,
            "p50_response_time": round(m.percentile(0.5), 6),
            "p99_response_time": round(m.percentile(0.99), 6),
            "ttft_estimate": m.ttft.value_at(now),
            "prompt_cache_hit_rate": None if (rate := m.prompt_cache_hit_rate) is None else round(rate, 3),
            "models_installed": sorted(self.installed_models) if self.installed_models is not None else None,
            "models_configured": sorted(self.configured_models),
            "tags": sorted(self.tags),
            "priority": self.priority,
            "weight": self.weight,
            "version": self.version,
            "last_error": m.last_error,
            "removed": self.removed,
            # why routing skips it now, and for how long (seconds; 0 when it is not busy)
            "busy_for": round(max(self._busy_until - now, 0.0), 3),
            "unavailable_reason": self.unavailable_reason(now),
        }

    def unavailable_reason(self, now: float) -> str | None:
        """Why the router skips this instance now (removed, unhealthy, breaker, busy), or None."""
        if self.removed:
            return "removed"
        breaker = self.breaker.state_at(now)
        if breaker is CircuitState.OPEN:
            retry_at = self.breaker.retry_at()
            left = f" for another {max(retry_at - now, 0.0):.3g}s" if retry_at is not None else ""
            return f"circuit breaker open{left}"
        if self.state is InstanceState.UNHEALTHY:
            return "unhealthy"
        if self._busy_until > now:
            return f"{self.busy_reason or 'busy'} (for another {self._busy_until - now:.3g}s)"
        return None

    def __repr__(self) -> str:
        return f"OllamaInstance(id={self.id!r}, state={self.state.value}, in_flight={self.in_flight})"
