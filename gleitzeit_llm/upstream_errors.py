"""Errors that the upstream Ollama classes' users already catch, for the framework adapters.

Code written for ``ChatOllama``, ``OllamaEmbeddings`` or LlamaIndex's ``Ollama`` catches
``ollama.ResponseError`` and reads its ``status_code`` (404: pull the model). The adapters pass
every error of a call through :func:`as_response_error`, which makes it *also* an
``ollama.ResponseError`` (when the ``ollama`` package is installed), with the HTTP status of the
failure that decided the call. It stays the same object, of a class that subclasses its own: its
message, attributes and ``isinstance(err, GleitzeitError)`` are unchanged::

    try:
        llm.invoke("hi")
    except ollama.ResponseError as e:
        if e.status_code == 404:
            ...  # pull the model, as with ChatOllama

The core never imports ``ollama``; only the adapters call this module.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from gleitzeit_llm.errors import (
    AllInstancesFailedError,
    ConfigError,
    GleitzeitError,
    InstanceBusyError,
    InstanceTimeoutError,
    ModelNotFoundError,
    NoInstanceAvailableError,
    PoolSaturatedError,
    RequestError,
    SyncCallInEventLoopError,
)

__all__ = ["UPSTREAM_ERRORS", "as_response_error", "status_code_of"]

# What a pool error means in HTTP words when no server answered with a status: the pool stands
# where a gateway would (502 an instance failed, 504 it timed out, 503 no capacity).
_BY_CLASS: tuple[tuple[type[BaseException], int], ...] = (
    (ModelNotFoundError, 404),
    (RequestError, 400),
    (InstanceBusyError, 503),
    (InstanceTimeoutError, 504),
    (PoolSaturatedError, 503),
)
# NoInstanceAvailableError names the filter that removed every instance: the model's (from
# routing's "does not have model", or /api/show's "may have it") is a 404 as a server's would be.
_MODEL_MISSING = ("have model", "may have it")

_classes: dict[type[BaseException], type[BaseException]] = {}
_lock = threading.Lock()


def status_code_of(exc: BaseException) -> int:
    """The HTTP status that decided ``exc``: the server's own when one answered with an error,
    else what the failure would be at a gateway (502, 503, 504; 404 for a model no instance has).

    For :class:`AllInstancesFailedError` it is the status of its last attempt that got an HTTP
    answer (an answer says more than a server that could not be reached), else of its last attempt.
    """
    exc = _deciding(exc)
    status = _http_status(exc)
    if status is not None:
        return status
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, NoInstanceAvailableError):
        return 404 if any(words in str(exc) for words in _MODEL_MISSING) else 503
    return 502


def _deciding(exc: BaseException) -> BaseException:
    if not isinstance(exc, AllInstancesFailedError) or not exc.errors:
        return exc
    answered = [e for e in exc.errors if _http_status(e) is not None]
    return answered[-1] if answered else exc.errors[-1]


def as_response_error(exc: BaseException) -> BaseException:
    """``exc``, made also an ``ollama.ResponseError`` in place when it is an error of a call
    (not a configuration or usage error) and the ``ollama`` package is installed."""
    if (
        not isinstance(exc, GleitzeitError)
        or isinstance(exc, (ConfigError, SyncCallInEventLoopError))
        or _response_error() is None
        or isinstance(exc, _response_error())  # type: ignore[arg-type]
    ):
        return exc
    # The same object, so that its traceback, cause and identity (in .errors, in handlers) stay.
    exc.__class__ = _compatible(type(exc))
    message = getattr(_deciding(exc), "ollama_message", None)
    exc.error = message if message else str(exc)  # type: ignore[attr-defined]
    exc.status_code = status_code_of(exc)  # type: ignore[attr-defined]
    return exc


class _UpstreamErrors:
    """``with UPSTREAM_ERRORS:`` passes an error raised inside through :func:`as_response_error`
    (a plain class: cheaper on the call path than a generator-based context manager)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            as_response_error(exc)


UPSTREAM_ERRORS = _UpstreamErrors()


def _http_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and status >= 400 else None


_UNSET: Any = object()
_response_error_class: Any = _UNSET


def _response_error() -> type[BaseException] | None:
    global _response_error_class
    if _response_error_class is _UNSET:  # imported on the first error only, never on the call path
        try:
            from ollama import ResponseError
        except ImportError:
            ResponseError = None  # type: ignore[assignment, misc]
        _response_error_class = ResponseError
    return _response_error_class  # type: ignore[no-any-return]


def _reduce_as(cls: type[BaseException]) -> Any:
    """Pickled as ``cls`` itself: the made class is found by no name."""

    def __reduce__(self: BaseException) -> Any:
        reduced = cls.__reduce__(self)
        return (cls, *reduced[1:])  # type: ignore[index]

    return __reduce__


def _compatible(cls: type[BaseException]) -> type[BaseException]:
    """``cls`` plus ``ollama.ResponseError``, under ``cls``'s own name and message (one per class)."""
    made = _classes.get(cls)
    if made is None:
        with _lock:
            made = _classes.get(cls)
            if made is None:
                made = type(
                    cls.__name__,
                    (cls, _response_error()),  # type: ignore[misc]
                    {
                        "__module__": cls.__module__,
                        "__qualname__": cls.__qualname__,
                        "__str__": cls.__str__,
                        "__reduce__": _reduce_as(cls),
                    },
                )
                _classes[cls] = made
    return made
