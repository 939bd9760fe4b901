"""The gateway's answer to a failed call: Ollama's error shape (``{"error": "..."}``) with a
status that says who is to blame.

====================================================  ======
what happened                                          status
====================================================  ======
the caller's mistake (bad JSON, no model, bad header,  400
an instance answered 400)
no instance has the model                              404
pool saturated past the queue timeout, no instance     503 + Retry-After
routable, every instance busy
every attempt timed out                                504
every attempt failed                                   502
====================================================  ======
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gleitzeit_llm.errors import (
    AllInstancesFailedError,
    GleitzeitError,
    InstanceBusyError,
    InstanceError,
    InstanceTimeoutError,
    ModelNotFoundError,
    NoInstanceAvailableError,
    PoolSaturatedError,
    RequestError,
)
from gleitzeit_llm.gateway.headers import ATTEMPTS, INSTANCE
from gleitzeit_llm.ollama import model_key, redact_url, spelling_key

if TYPE_CHECKING:
    from gleitzeit_llm.manager import OllamaPoolManager

__all__ = ["GatewayError", "failure", "model_missing_message"]


class GatewayError(Exception):
    """An answer the gateway gives instead of Ollama's: status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def model_missing_message(model: str) -> str:
    """Ollama's own words for a model it does not have (clients match on them)."""
    return f'model "{model}" not found, try pulling it first'


def failure(exc: BaseException, manager: OllamaPoolManager, model: str | None) -> GatewayError:
    """The :class:`GatewayError` for a call that failed with ``exc`` (credentials never shown)."""
    if isinstance(exc, GatewayError):
        return exc
    status, headers = _status(exc, manager, model)
    headers.update(_tried(exc))
    if status == 404 and model is not None:
        message = model_missing_message(model)
    elif isinstance(exc, RequestError) and exc.ollama_message:
        message = exc.ollama_message  # the instance's own words, as Ollama would answer
    else:
        message = str(exc) if isinstance(exc, GleitzeitError) else f"internal error: {type(exc).__name__}"
    return GatewayError(status, redact_url(message), headers)


def _status(exc: BaseException, manager: OllamaPoolManager, model: str | None) -> tuple[int, dict[str, str]]:
    if isinstance(exc, RequestError):
        return 400, {}
    retry_after = {"Retry-After": _retry_after(manager, exc)}
    if isinstance(exc, ModelNotFoundError):
        return 404, {}
    if isinstance(exc, NoInstanceAvailableError):
        return (404, {}) if model is not None and _nobody_has(manager, model) else (503, retry_after)
    if isinstance(exc, (PoolSaturatedError, InstanceBusyError)):
        return 503, retry_after
    errors = exc.errors if isinstance(exc, AllInstancesFailedError) else [exc]
    if errors and all(isinstance(e, ModelNotFoundError) for e in errors):
        return 404, {}
    if errors and all(isinstance(e, (InstanceBusyError, PoolSaturatedError)) for e in errors):
        return 503, retry_after
    if errors and all(isinstance(e, InstanceTimeoutError) for e in errors):
        return 504, {}
    if isinstance(exc, GleitzeitError):
        return 502, {}
    return 500, {}


def _tried(exc: BaseException) -> dict[str, str]:
    # The pool headers of an answer no instance gave: how many attempts were made, and the
    # instance when there was just one.
    if isinstance(exc, AllInstancesFailedError):
        return {ATTEMPTS: str(exc.attempts)}
    instance = getattr(exc, "instance", None)
    if isinstance(exc, InstanceError) and instance:
        return {INSTANCE: instance, ATTEMPTS: "1"}
    return {}


def _nobody_has(manager: OllamaPoolManager, model: str) -> bool:
    key, spelling = model_key(model), spelling_key(model)
    return not any(inst.may_serve(key, spelling) for inst in manager.instances)


def _retry_after(manager: OllamaPoolManager, exc: BaseException) -> str:
    # The server's own Retry-After when it sent one, else the pool's queue timeout: by then a
    # slot has most likely come free. Whole seconds, at least one (RFC 9110).
    seconds = getattr(exc, "retry_after", None) or manager.config.load_balancing.queue_timeout
    return str(max(1, math.ceil(seconds)))
