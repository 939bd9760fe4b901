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
=======================================  ==========================================================
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.testing.http import Exchange, HttpRequest

if TYPE_CHECKING:
    from gleitzeit_llm.testing.emulator import OllamaEmulator

__all__ = ["AdminApi"]

_JSON = "application/json; charset=utf-8"


class AdminApi:
    """Handlers of ``/__emulator__/...``; they run on the emulator's loop thread."""

    def __init__(self, emulator: OllamaEmulator) -> None:
        self.emu = emulator

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
        emu = self.emu
        return {
            "url": emu.url,
            "running": emu.running,
            "models": [m.name for m in emu.models],
            "loaded": emu.loaded_models(),
            "in_flight": emu.in_flight(),
            "generating": emu.generating(),
            "settings": emu.settings.to_dict(),
            "faults": emu.faults.current.to_dict(),
            "load_counts": dict(emu.scheduler.stats.loads),
            "unload_counts": dict(emu.scheduler.stats.unloads),
            "max_concurrency": emu.max_concurrency_seen(),
            "max_model_concurrency": dict(emu.scheduler.stats.max_model_concurrency),
        }

    def _get_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.emu.faults.current.to_dict()

    def _post_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.emu.set_faults(**body).to_dict()

    def _delete_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        self.emu.clear_faults()
        return self.emu.faults.current.to_dict()

    def _get_requests(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [record.to_dict() for record in self.emu.requests]

    def _delete_requests(self, body: dict[str, Any]) -> dict[str, Any]:
        self.emu.clear_log()
        return {"ok": True}

    def _post_reset(self, body: dict[str, Any]) -> dict[str, Any]:
        self.emu.clear_log()
        self.emu.clear_faults()
        self.emu.clear_tool_calls()
        if body.get("unload"):
            self.emu.unload()
        return {"ok": True}

    def _post_settings(self, body: dict[str, Any]) -> dict[str, Any]:
        self.emu.configure(**body)
        return self.emu.settings.to_dict()

    def _post_tool_calls(self, body: dict[str, Any]) -> dict[str, Any]:
        self.emu.script_tool_calls(body.get("calls") or [], persistent=bool(body.get("persistent")))
        return {"ok": True}

    def _post_load(self, body: dict[str, Any]) -> dict[str, Any]:
        self.emu.load(str(body.get("model") or ""), body.get("keep_alive"))
        return {"loaded": self.emu.loaded_models()}

    def _post_unload(self, body: dict[str, Any]) -> dict[str, Any]:
        self.emu.unload(body.get("model"))
        return {"loaded": self.emu.loaded_models()}
