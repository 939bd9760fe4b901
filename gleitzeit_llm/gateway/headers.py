"""Routing hints from request headers (``X-Gleitzeit-*``), checked by :meth:`RoutingHints.parse`.

The headers steer the pool only: requests are rebuilt from their JSON bodies, so no header of the
caller reaches Ollama.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gleitzeit_llm.errors import RequestError
from gleitzeit_llm.hints import RoutingHints

__all__ = ["ATTEMPTS", "HINT_HEADERS", "INSTANCE", "HeaderError", "hints_from_headers"]

#: Who served the request (the instance id) and after how many attempts: on every answer.
INSTANCE = "X-Gleitzeit-Instance"
ATTEMPTS = "X-Gleitzeit-Attempts"

#: Header (lower case, as ASGI gives them) -> the hint it sets.
HINT_HEADERS: dict[str, str] = {
    "x-gleitzeit-tags": "instance_tags",
    "x-gleitzeit-strategy": "load_balancing_strategy",
    "x-gleitzeit-fallback-model": "fallback_model",
    "x-gleitzeit-require-gpu": "require_gpu",
    "x-gleitzeit-max-latency": "max_latency",
    "x-gleitzeit-session": "session_id",
}
_SPELLED = {
    hint: "-".join(part.capitalize() for part in name.split("-")) for name, hint in HINT_HEADERS.items()
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class HeaderError(RequestError):
    """A routing header with a bad value; ``header`` names it."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(f"{header}: {message}", field=header)
        self.header = header


def hints_from_headers(headers: Mapping[str, str]) -> RoutingHints:
    """The routing hints the ``X-Gleitzeit-*`` headers set (none: the pool's defaults).

    ``headers`` has lower-case names (Starlette's ``request.headers``). Raises
    :class:`HeaderError` naming the header whose value is bad.
    """
    values: dict[str, Any] = {}
    for name, hint in HINT_HEADERS.items():
        raw = headers.get(name)
        if raw is not None:
            values[hint] = _value(hint, raw.strip())
    if not values:
        return RoutingHints()
    try:
        return RoutingHints.parse(values)
    except RequestError as exc:
        header = _SPELLED.get(exc.field, "X-Gleitzeit")
        raise HeaderError(header, str(exc)) from None


def _value(hint: str, raw: str) -> Any:
    if hint == "instance_tags":
        return [tag.strip() for tag in raw.split(",") if tag.strip()]
    if hint == "require_gpu":
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise HeaderError(_SPELLED[hint], f"must be true or false, got {raw!r}")
    if hint == "max_latency":
        try:
            return float(raw)
        except ValueError:
            raise HeaderError(
                _SPELLED[hint], f"must be a positive number of milliseconds, got {raw!r}"
            ) from None
    return raw
