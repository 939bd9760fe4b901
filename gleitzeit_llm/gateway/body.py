"""Reading a request body as JSON, never more than the configured limit."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from gleitzeit_llm.gateway.errors import GatewayError

__all__ = ["read_json", "require_model"]


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object: 413 above ``limit`` bytes (counted while reading, so a chunked
    body without Content-Length is cut off too), 400 when it is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    size = 0
    parts: list[bytes] = []
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    raw = b"".join(parts)
    if not raw.strip():
        raise GatewayError(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise GatewayError(400, f"invalid JSON in the request body: {exc}") from None
    if not isinstance(body, dict):
        raise GatewayError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def require_model(body: dict[str, Any], field: str = "model") -> str:
    """The body's model name (Ollama's older ``name`` spelling accepted), or Ollama's 400."""
    model = body.get(field) or body.get("name")
    if not isinstance(model, str) or not model.strip():
        raise GatewayError(400, "model is required")
    if field not in body or body[field] != model:
        body[field] = model
    return model


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body too large: the limit is {limit} bytes (--max-body)")
