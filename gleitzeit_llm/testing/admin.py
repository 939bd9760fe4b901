"""The control API under ``/__emulator__/`` (a prefix Ollama never uses).

It lets another process read and change an emulator (``EmulatorProcess`` uses it); requests to
it are never logged and never affected by faults. JSON in, JSON out:

=======================================  ==========================================================
``GET    /__emulator__/state``           url, models, loaded, in-flight, settings, faults, counts
``GET    /__emulator__/faults``          the faults in force
``POST   /__emulator__/faults``          change some faults (body: fault fields), returns them
``DELETE /__emulator__/faults``          clear all faults
``GET    /__emulator__/requests``        the request log (list of records)
``DELETE /__emulator__/requests``        clear the log and statistics
``POST   /__emulator__/reset``           clear log, faults, tool scripts; ``{"unload": true}`` too
``POST   /__emulator__/settings``        change settings (``num_parallel``, ``time_scale``, ...)
``POST   /__emulator__/tool_calls``      ``{"calls": [...], "persistent": false}``
``POST   /__emulator__/load``            ``{"model": "llama3.2", "keep_alive": "5m"}``
``POST   /__emulator__/unload``          ``{"model": "llama3.2"}`` (no model: all)
``GET    /__emulator__/prompt_cache``    ``{name:tag: [slot, ...]}`` of the loaded models
``DELETE /__emulator__/prompt_cache``    empty the caches (``{"model": ...}``: one model's)
=======================================  ==========================================================
"""

from __future__ import annotations

import json
from typing import Any

from gleitzeit_llm.testing.http import Exchange, HttpRequest
from gleitzeit_llm.testing.state import EmulatorState

__all__ = ["AdminApi"]

_JSON = "application/json; charset=utf-8"


class AdminApi:
    """Handlers of ``/__emulator__/...``; they run on the emulator's loop thread."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def handle(self, request: HttpRequest, ex: Exchange) -> None:
        action = request.path.split("/__emulator__/", 1)[1].strip("/")
        method = request.method
        try:
            body: Any = json.loads(request.body) if request.body.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            handler = getattr(self, f"_{method.lower()}_{action}", None)
            if handler is None:
                await self._reply(ex, 404, {"error": f"no admin route {method} /__emulator__/{action}"})
                return
            await self._reply(ex, 200, handler(body))
        except (TypeError, ValueError) as exc:
            await self._reply(ex, 400, {"error": str(exc)})

    async def _reply(self, ex: Exchange, status: int, value: Any) -> None:
        await ex.send(status, _JSON, json.dumps(value).encode())

    def _get_state(self, body: dict[str, Any]) -> dict[str, Any]:
        state = self.state
        stats = state.scheduler.stats
        return {
            "url": state.url,
            "running": state.running,
            "models": [m.name for m in state.models.values()],
            "loaded": state.loaded_models(),
            "in_flight": state.in_flight(),
            "generating": state.generating(),
            "settings": state.settings.to_dict(),
            "faults": state.faults.current.to_dict(),
            "load_counts": dict(stats.loads),
            "unload_counts": dict(stats.unloads),
            "max_concurrency": stats.max_concurrency,
            "max_model_concurrency": dict(stats.max_model_concurrency),
        }

    def _get_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.state.faults.current.to_dict()

    def _post_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.state.faults.set(**body).to_dict()

    def _delete_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.faults.clear()
        return self.state.faults.current.to_dict()

    def _get_requests(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [record.to_dict() for record in self.state.log.snapshot()]

    def _delete_requests(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.clear_log()
        return {"ok": True}

    def _post_reset(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.clear_log()
        self.state.faults.clear()
        self.state.tools.clear()
        if body.get("unload"):
            self.state.unload()
        return {"ok": True}

    def _post_settings(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.configure(**body)
        return self.state.settings.to_dict()

    def _post_tool_calls(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.tools.script(body.get("calls") or [], persistent=bool(body.get("persistent")))
        return {"ok": True}

    def _post_load(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.load(str(body.get("model") or ""), body.get("keep_alive"))
        return {"loaded": self.state.loaded_models()}

    def _post_unload(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.unload(body.get("model"))
        return {"loaded": self.state.loaded_models()}

    def _get_prompt_cache(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.state.prompt_caches(body.get("model"))

    def _delete_prompt_cache(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.clear_prompt_caches(body.get("model"))
        return {"ok": True}
