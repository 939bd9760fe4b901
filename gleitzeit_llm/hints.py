"""Per-call routing hints: one parser, used by every entry point.

The provider's params, the manager's ``route_request``, workflow and batch pre-checks and the
framework adapters all turn hints into a :class:`RoutingHints` with :meth:`RoutingHints.parse`,
so a hint one of them accepts is accepted by all, and a bad one fails everywhere with the same
:class:`~gleitzeit_llm.errors.RequestError` (its ``field`` is the hint's name). Hints steer the
pool and never reach Ollama.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from gleitzeit_llm.config import LoadBalancingStrategy
from gleitzeit_llm.errors import ConfigError, RequestError

__all__ = ["HINT_NAMES", "RoutingHints"]

# The canonical spellings, looked up before the enum's slower case/separator rules.
_STRATEGY_NAMES = {member.value: member.value for member in LoadBalancingStrategy}


@dataclass(frozen=True)
class RoutingHints:
    """Per-call routing hints; they steer the pool and never reach Ollama.

    Build them from a mapping with :meth:`parse` (validated); constructed directly, they are
    validated when the call is routed.
    """

    load_balancing_strategy: str | LoadBalancingStrategy | None = None
    """A strategy in any spelling :class:`LoadBalancingStrategy` accepts (``"least loaded"``)."""
    instance_tags: tuple[str, ...] | None = None
    """Only instances with all these tags."""
    require_gpu: bool | None = None  # None: not given (so a per-call False can turn a default off)
    """Only instances tagged ``gpu``."""
    fallback_model: str | None = None
    """The model to use once the requested one failed or is missing everywhere it could run."""
    max_latency: float | None = None
    """Prefer instances expected to answer within this many milliseconds."""
    session_id: str | None = None
    """Keep the calls of one conversation on one instance (rendezvous hashing of the id), as
    long as it stays within the bounded share of the load (``load_balancing.balance_epsilon``)."""

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> RoutingHints:
        """The hints in ``values`` (other keys are ignored), checked: the one validator of hints.

        The strategy comes back as its canonical name (``"least_loaded"``), the tags as a tuple.
        Raises :class:`RequestError` whose ``field`` is the bad hint and whose message says what
        it accepts.
        """
        get = values.get
        strategy = get("load_balancing_strategy")
        tags = get("instance_tags")
        require_gpu = get("require_gpu")
        fallback = get("fallback_model")
        latency = get("max_latency")
        session = get("session_id")
        if (
            strategy is None
            and tags is None
            and require_gpu is None
            and fallback is None
            and latency is None
            and session is None
        ):
            return _NO_HINTS  # the common call: nothing to check or to build
        if strategy is not None:
            strategy = _strategy(strategy)
        if tags is not None:
            if (
                isinstance(tags, str)
                or not isinstance(tags, (Sequence, Set))  # a generator would be used up by the check
                or not all(isinstance(tag, str) for tag in tags)
            ):
                raise _bad("instance_tags", "must be a list of strings", tags)
            tags = tuple(tags)
        if require_gpu is not None and not isinstance(require_gpu, bool):
            raise _bad("require_gpu", "must be true or false", require_gpu)
        if fallback is not None and (not isinstance(fallback, str) or not fallback.strip()):
            raise _bad("fallback_model", "must be a model name", fallback)
        if latency is not None and (
            isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency <= 0
        ):
            raise _bad("max_latency", "must be a positive number of milliseconds", latency)
        if session is not None and (not isinstance(session, str) or not session.strip()):
            raise _bad("session_id", "must be a non-empty string (the conversation's id)", session)
        return cls(strategy, tags, require_gpu, fallback, latency, session)

    @classmethod
    def pop_from(cls, params: dict[str, Any]) -> RoutingHints:
        """:meth:`parse` the hints in ``params`` (a copy the caller owns) and take them out of it."""
        if params.keys().isdisjoint(HINT_NAMES):  # the common call: no hints, nothing to check
            return _NO_HINTS
        hints = cls.parse(params)
        for name in HINT_NAMES:
            params.pop(name, None)
        return hints

    def merged(self, other: RoutingHints) -> RoutingHints:
        """These hints, overridden by whatever ``other`` sets."""
        return RoutingHints(
            load_balancing_strategy=other.load_balancing_strategy or self.load_balancing_strategy,
            instance_tags=other.instance_tags if other.instance_tags is not None else self.instance_tags,
            require_gpu=other.require_gpu if other.require_gpu is not None else self.require_gpu,
            fallback_model=other.fallback_model or self.fallback_model,
            max_latency=other.max_latency if other.max_latency is not None else self.max_latency,
            session_id=other.session_id or self.session_id,
        )


_NO_HINTS = RoutingHints()  # immutable, so one instance serves every call without hints

#: The hint names, as parameters everywhere (provider params, adapter fields and kwargs, workflows).
HINT_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RoutingHints))


def _strategy(value: object) -> str:
    if type(value) is str:  # an enum member hashes by its name: it takes the slower path
        name = _STRATEGY_NAMES.get(value)
        if name is not None:
            return name
    try:  # the enum's spelling rules, so a hint routes wherever the config would accept it
        return LoadBalancingStrategy.parse(value, field="load_balancing_strategy").value
    except ConfigError as exc:  # as docs/reliability.md shows it, and naming the valid ones
        raise RequestError(
            f"load_balancing_strategy: unknown strategy {value!r}; {exc.hint}",
            field="load_balancing_strategy",
        ) from None


def _bad(name: str, rule: str, value: object) -> RequestError:
    return RequestError(f"{name} {rule}, got {value!r}", field=name)
