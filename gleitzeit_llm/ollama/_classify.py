"""Who is to blame: HTTP statuses and transport failures mapped onto the error taxonomy.

==============================================  ==========================================
what happened                                   raised
==============================================  ==========================================
connect refused / DNS / reset / protocol error  InstanceFailedError (status None)
connect timeout                                 InstanceTimeoutError(phase="connect")
no response headers in time                     InstanceTimeoutError(phase="first_byte")
no next body chunk in time                      InstanceTimeoutError(phase="idle")
``Timeouts.total`` exceeded                      InstanceTimeoutError(phase="total")
no free connection in the local pool            InstanceBusyError
connection lost while reading the body          StreamInterruptedError(chunks_received=n)
400, 413, 422                                   RequestError (Ollama's message)
401, 403                                        InstanceFailedError (access denied)
404 ``model '…' not found``                     ModelNotFoundError(model=…)
404 other (``404 page not found``), 405         InstanceFailedError (not an Ollama endpoint)
429, 503                                        InstanceBusyError(retry_after=…)
500, 502, 504 and any other 5xx                 InstanceFailedError (Ollama's message)
3xx, other statuses                             InstanceFailedError
200 with a body that is not Ollama's JSON       InstanceFailedError (does not look like Ollama)
200 with ``{"error": …}``                       InstanceFailedError (Ollama's message)
==============================================  ==========================================

Every error carries ``instance``, ``url`` (credentials removed), ``status`` and, when the server
sent one, ``ollama_message``.
"""

from __future__ import annotations

import json
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from gleitzeit_llm.errors import (
    GleitzeitError,
    InstanceBusyError,
    InstanceFailedError,
    InstanceTimeoutError,
    ModelNotFoundError,
    RequestError,
    StreamInterruptedError,
)
from gleitzeit_llm.ollama.timeouts import Timeouts
from gleitzeit_llm.ollama.urls import redact_url

_MODEL_NOT_FOUND = re.compile(r"""model\s+['"]?(?P<name>[^'"]*?)['"]?\s+not\s+found""", re.IGNORECASE)


def describe_instance(instance: str | None, url: str | None) -> str:
    """How messages name an instance: ``instance 'gpu-1' (http://gpu1:11434)``."""
    if instance and url:
        return f"instance {instance!r} ({url})"
    if instance:
        return f"instance {instance!r}"
    if url:
        return f"instance at {url}"
    return "instance"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; else ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ollama_error_text(body: bytes) -> tuple[str | None, str]:
    """``(ollama_message, shown)``: Ollama's ``error`` text if the body carries one, and what to show."""
    text = body.decode("utf-8", "replace")
    try:
        data: Any = json.loads(text) if text.lstrip().startswith("{") else None
    except ValueError:
        data = None
    if isinstance(data, dict) and "error" in data:
        error = data["error"]
        if isinstance(error, dict):  # OpenAI-compatible shape {"error": {"message": ...}}
            error = error.get("message", json.dumps(error))
        message = str(error)
        return message, message
    return None, _snippet(text) or "empty body"


def error_for_status(
    response: httpx.Response,
    body: bytes,
    *,
    instance: str,
    url: str,
    method: str,
    path: str,
    model: str | None = None,
) -> GleitzeitError:
    """The error for a non-2xx response (``body`` already read)."""
    status = response.status_code
    label = describe_instance(instance, url)
    ollama_message, shown = ollama_error_text(body)
    common: dict[str, Any] = {
        "instance": instance,
        "url": url,
        "status": status,
        "ollama_message": ollama_message,
    }

    if status in (400, 413, 422):
        field = "model" if ollama_message == "model is required" else None
        return RequestError(f"{label}: request rejected: {shown} (HTTP {status})", field=field, **common)
    if status == 404:
        match = _MODEL_NOT_FOUND.search(ollama_message or "")
        if match:
            name = model or match.group("name")
            return ModelNotFoundError(f"{label}: model {name!r} not found (HTTP 404)", model=name, **common)
        return InstanceFailedError(
            f"{label}: not an Ollama endpoint: {method} {path} answered {shown!r} (HTTP 404)", **common
        )
    if status == 405:
        return InstanceFailedError(
            f"{label}: not an Ollama endpoint: {method} {path} answered {shown!r} (HTTP 405)", **common
        )
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        wait = f", retry after {retry_after:g}s" if retry_after is not None else ""
        return InstanceBusyError(
            f"{label}: busy: {shown} (HTTP {status}{wait})", retry_after=retry_after, **common
        )
    if status in (401, 403, 407):
        return InstanceFailedError(
            f"{label}: access denied: {shown} (HTTP {status}); check the credentials for this instance",
            **common,
        )
    if 500 <= status < 600:
        return InstanceFailedError(f"{label}: server error: {shown} (HTTP {status})", **common)
    if 300 <= status < 400:
        location = redact_url(response.headers.get("location", "?"))
        return InstanceFailedError(
            f"{label}: {method} {path} redirected to {location} (HTTP {status}); "
            "point the instance URL at the Ollama server itself",
            **common,
        )
    return InstanceFailedError(f"{label}: unexpected answer: {shown} (HTTP {status})", **common)


def not_ollama(
    response: httpx.Response, body: bytes, reason: str, *, instance: str, url: str, method: str, path: str
) -> InstanceFailedError:
    """A 2xx answer that Ollama would never give (HTML, not JSON, the wrong shape)."""
    content_type = response.headers.get("content-type", "no content type").split(";")[0]
    return InstanceFailedError(
        f"{describe_instance(instance, url)}: {method} {path} answered HTTP {response.status_code} with "
        f"{content_type} ({_snippet(body.decode('utf-8', 'replace')) or 'empty body'!r}): {reason}; "
        "this does not look like Ollama",
        instance=instance,
        url=url,
        status=response.status_code,
    )


def _seconds(value: float | None) -> str:
    return "ever" if value is None else f"{value:g}s"


def error_for_exception(
    exc: httpx.HTTPError,
    *,
    instance: str,
    url: str,
    in_body: bool,
    timeouts: Timeouts,
    total_expired: bool = False,
    chunks_received: int = 0,
    status: int | None = None,
) -> GleitzeitError:
    """The error for an httpx failure: while connecting/waiting for headers, or reading the body."""
    label = describe_instance(instance, url)
    detail = redact_url(str(exc) or type(exc).__name__)
    common: dict[str, Any] = {"instance": instance, "url": url, "status": status}
    if isinstance(exc, httpx.TimeoutException):
        if total_expired:
            return InstanceTimeoutError(
                f"{label}: total timeout of {_seconds(timeouts.total)} exceeded", phase="total", **common
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return InstanceTimeoutError(
                f"{label}: no connection within {_seconds(timeouts.connect)} (connect timeout)",
                phase="connect",
                **common,
            )
        if isinstance(exc, httpx.PoolTimeout):
            return InstanceBusyError(
                f"{label}: no free connection in the local pool within {_seconds(timeouts.first_byte)} "
                "(all max_connections in use)",
                **common,
            )
        if in_body:
            return InstanceTimeoutError(
                f"{label}: nothing received for {_seconds(timeouts.idle)} after {chunks_received} chunks "
                "(idle timeout)",
                phase="idle",
                **common,
            )
        return InstanceTimeoutError(
            f"{label}: no response within {_seconds(timeouts.first_byte)} (first_byte timeout)",
            phase="first_byte",
            **common,
        )
    if in_body:
        return StreamInterruptedError(
            f"{label}: connection lost after {chunks_received} chunks: {detail}",
            chunks_received=chunks_received,
            **common,
        )
    if isinstance(exc, httpx.ConnectError):
        return InstanceFailedError(f"{label}: cannot connect: {detail}", **common)
    return InstanceFailedError(f"{label}: connection failed: {detail}", **common)
