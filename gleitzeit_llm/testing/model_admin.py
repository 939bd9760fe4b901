"""The emulator's model management: ``POST /api/pull``, ``DELETE /api/delete``, ``POST /api/copy``.

Enough of Ollama's behaviour for clients and the gateway's fan-out: a pull streams the progress
lines Ollama sends (``pulling manifest``, one ``pulling <digest>`` with ``total``/``completed``,
``verifying sha256 digest``, ``writing manifest``, ``success``) and installs the model; a delete
uninstalls it, or answers 404 when it is not there. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from gleitzeit_llm.testing.http import Exchange
from gleitzeit_llm.testing.models import EmulatedModel, resolve
from gleitzeit_llm.testing.state import EmulatorState
from gleitzeit_llm.testing.wire import ApiError, dumps

__all__ = ["copy", "delete", "pull"]

_JSON = "application/json; charset=utf-8"
_NDJSON = "application/x-ndjson"


def _name(body: Any) -> str:
    name = body.get("model") or body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "model is required")
    return name


async def pull(state: EmulatorState, body: Any, ex: Exchange) -> None:
    """Install ``body["model"]``, streaming Ollama's progress lines (one status with ``stream: false``)."""
    name = _name(body)
    model = state.add_model(EmulatedModel(name))
    digest = "sha256:" + hashlib.sha256(model.key.encode()).hexdigest()
    if body.get("stream") is False:
        await ex.send(200, _JSON, dumps({"status": "success"}).encode())
        return
    lines: list[dict[str, Any]] = [
        {"status": "pulling manifest"},
        {
            "status": f"pulling {digest[7:19]}",
            "digest": digest,
            "total": model.size or 0,
            "completed": model.size or 0,
        },
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    await ex.start(200, _NDJSON)
    for line in lines:
        await ex.write((dumps(line) + "\n").encode())
    await ex.end()


async def delete(state: EmulatorState, body: Any, ex: Exchange) -> None:
    """Uninstall ``body["model"]``: 200 with an empty body, or Ollama's 404."""
    name = _name(body)
    if resolve(state.models, name, fold_case=True) is None:
        raise ApiError(404, f"model '{name}' not found")
    state.remove_model(name)
    await ex.send(200, _JSON, b"")


async def copy(state: EmulatorState, body: Any, ex: Exchange) -> None:
    """Install ``body["source"]`` again as ``body["destination"]``: 200 with an empty body, or 404."""
    source, destination = body.get("source"), body.get("destination")
    if not isinstance(source, str) or not isinstance(destination, str) or not destination.strip():
        raise ApiError(400, "source and destination are required")
    model = resolve(state.models, source, fold_case=True)
    if model is None:
        raise ApiError(404, f"model '{source}' not found")
    state.add_model(dataclasses.replace(model, name=destination, digest=None))
    await ex.send(200, _JSON, b"")
