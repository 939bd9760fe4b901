"""The one error hierarchy of gleitzeit-llm.

Every failure a caller can see is one of these, so ``except GleitzeitError`` catches all of
them and the class alone says who is to blame and whether another try can help::

    GleitzeitError
    ├── ConfigError                  bad configuration: names the field, the value and the fix
    ├── RequestError                 the caller's request is wrong (local validation or HTTP 400);
    │                                never retried, never counted against an instance
    ├── SyncCallInEventLoopError     a blocking (sync) method was called on an event-loop thread
    ├── InstanceError                one instance could not serve this request (carries the instance)
    │   ├── InstanceFailedError      connection refused/reset, 5xx: the instance failed
    │   │   ├── InstanceTimeoutError no connection, first byte or next chunk in time
    │   │   └── StreamInterruptedError  the stream broke: truncated, not NDJSON, an
    │   │                            ``{"error": ...}`` line after status 200, or a streamed
    │   │                            call stalled after its first chunk
    │   ├── InstanceBusyError        503/429: back-pressure, not a dead server
    │   └── ModelNotFoundError       404: this instance lacks the model; others may have it
    └── PoolError                    the pool as a whole could not serve the request
        ├── NoInstanceAvailableError no instance is eligible (tags, model, breakers, all removed)
        ├── PoolSaturatedError       every eligible instance stayed full past the queue timeout
        └── AllInstancesFailedError  every attempt failed; ``.errors`` holds each attempt's error

Retry logic reads ``retryable``: an :class:`InstanceError` may succeed elsewhere, a
:class:`RequestError` never will.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AllInstancesFailedError",
    "ConfigError",
    "GleitzeitError",
    "InstanceBusyError",
    "InstanceError",
    "InstanceFailedError",
    "InstanceTimeoutError",
    "ModelNotFoundError",
    "NoInstanceAvailableError",
    "PoolError",
    "PoolSaturatedError",
    "RequestError",
    "StreamInterruptedError",
    "SyncCallInEventLoopError",
]


class GleitzeitError(Exception):
    """Base class of every error raised by gleitzeit-llm."""

    retryable: bool = False


class ConfigError(GleitzeitError, ValueError):
    """A configuration value is wrong.

    ``field`` is the dotted path of the offending field (``instances[1].url``), ``value`` what
    was given and ``hint`` what is allowed.
    """

    def __init__(
        self, message: str, *, field: str | None = None, value: object = None, hint: str | None = None
    ):
        self.field = field
        self.value = value
        self.hint = hint
        super().__init__(message)


class RequestError(GleitzeitError, ValueError):
    """The request itself is invalid: fixing it is up to the caller, retrying cannot help.

    Raised before any instance is picked when local validation fails, or after Ollama answered
    400 (then ``instance`` and ``status`` are set).
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        instance: str | None = None,
        url: str | None = None,
        status: int | None = None,
        ollama_message: str | None = None,
    ):
        self.field = field
        self.instance = instance
        self.url = url
        self.status = status
        self.ollama_message = ollama_message
        super().__init__(message)


class SyncCallInEventLoopError(GleitzeitError, RuntimeError):
    """A sync twin (``chat_sync``, ``acquire_sync``, ...) was called on a thread that runs an
    event loop. Blocking that loop would also block the task holding the slot the call waits
    for; the message names the async method to ``await`` instead. Raised before any work."""


class InstanceError(GleitzeitError):
    """One instance could not serve the request; another instance may.

    Attributes: ``instance`` (id), ``url`` (credentials removed), ``status`` (HTTP status, or
    ``None`` when no response arrived) and ``ollama_message`` (the server's own ``error`` text).
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        instance: str | None = None,
        url: str | None = None,
        status: int | None = None,
        ollama_message: str | None = None,
    ):
        self.instance = instance
        self.url = url
        self.status = status
        self.ollama_message = ollama_message
        super().__init__(message)

    @property
    def counts_against_instance(self) -> bool:
        """Whether this error is evidence that the instance is unhealthy (feeds its breaker)."""
        return True


class InstanceFailedError(InstanceError):
    """The instance failed: connection refused or reset, HTTP 5xx other than 503."""


class InstanceTimeoutError(InstanceFailedError, TimeoutError):
    """No connection, no first byte, or no next chunk within its timeout (also a ``TimeoutError``).

    ``phase`` is ``"connect"``, ``"first_byte"`` or ``"idle"``.
    """

    def __init__(self, message: str, *, phase: str, **kwargs: object):
        self.phase = phase
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class StreamInterruptedError(InstanceFailedError):
    """A response stream broke: it ended before ``done``, was not NDJSON, or carried an error line.

    ``chunks_received`` says how much the caller may already have seen; a stream that broke after
    its first chunk is not retried unless the caller opted in. ``delivered`` is ``True`` when the
    pool had already handed chunks of this stream to the caller. ``phase`` is ``None`` when the
    connection broke or the stream was garbled, and ``"idle"`` or ``"total"`` when a streamed call
    stalled after its first chunk (then ``__cause__`` is that :class:`InstanceTimeoutError`).
    """

    def __init__(self, message: str, *, chunks_received: int = 0, phase: str | None = None, **kwargs: object):
        self.chunks_received = chunks_received
        self.phase = phase
        self.delivered = False
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class InstanceBusyError(InstanceError):
    """The instance refused for load (503 ``server busy`` or 429); it is alive, just full.

    ``retry_after`` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)  # type: ignore[arg-type]

    @property
    def counts_against_instance(self) -> bool:
        return False


class ModelNotFoundError(InstanceError):
    """This instance does not have the model (HTTP 404); ``model`` names it."""

    def __init__(self, message: str, *, model: str | None = None, **kwargs: object):
        self.model = model
        super().__init__(message, **kwargs)  # type: ignore[arg-type]

    @property
    def counts_against_instance(self) -> bool:
        return False


class PoolError(GleitzeitError):
    """The pool as a whole could not serve the request."""


class NoInstanceAvailableError(PoolError):
    """No instance is eligible for the request; the message says which filter removed them."""


class PoolSaturatedError(PoolError):
    """Every eligible instance stayed at its concurrency limit for longer than the queue timeout."""

    retryable = True


class AllInstancesFailedError(PoolError):
    """Every attempt failed; ``errors`` lists each attempt's error in order."""

    def __init__(self, message: str, *, errors: Sequence[BaseException] = ()):
        self.errors = list(errors)
        super().__init__(message)

    @property
    def attempts(self) -> int:
        """How many attempts failed."""
        return len(self.errors)

    @property
    def instances(self) -> list[str | None]:
        """The instance each failed attempt went to, in order (None where no instance was reached)."""
        return [getattr(error, "instance", None) for error in self.errors]
