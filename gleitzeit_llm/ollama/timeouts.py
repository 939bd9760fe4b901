"""The timeouts of one request, by phase.

A generation can legitimately run for many minutes, so there is no total timeout by default;
instead each wait is bounded on its own: the TCP connect, the wait for the first byte (model load
plus prompt evaluation; for a non-streamed call Ollama sends nothing until it has finished, so
there it bounds the whole generation), and every gap between two stream chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

from gleitzeit_llm.errors import ConfigError

__all__ = ["TIMEOUT_HINT", "Timeouts", "timeout_problem"]

TIMEOUT_HINT = "use none for no limit"


def timeout_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a timeout, or None when it is one: seconds > 0, or None.

    The one rule: :class:`Timeouts` and the configuration's ``TimeoutConfig`` both ask it.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "expected a number of seconds"
    if not value > 0:  # also catches NaN
        return "must be greater than 0"
    return None


@dataclass(frozen=True)
class Timeouts:
    """Per-phase timeouts in seconds; ``None`` waits forever.

    ``connect``: TCP (and TLS) connect. ``first_byte``: until the response headers arrive
    (also bounds the wait for a free connection in the local pool). ``idle``: the longest gap
    between two chunks of the body. ``total``: the whole call, unset by default; when set it caps
    every other wait and is checked between chunks (``InstanceTimeoutError.phase == "total"``).

    >>> Timeouts(first_byte=30.0)
    Timeouts(connect=5.0, first_byte=30.0, idle=120.0, total=None)
    """

    connect: float | None = 5.0
    first_byte: float | None = 300.0
    idle: float | None = 120.0
    total: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "first_byte", "idle", "total"):
            value = getattr(self, name)
            problem = timeout_problem(value)
            if problem is not None:
                raise ConfigError(
                    f"timeouts.{name} = {value!r}: {problem}; {TIMEOUT_HINT}",
                    field=f"timeouts.{name}",
                    value=value,
                    hint=TIMEOUT_HINT,
                )
