"""``EmulatorState``: everything one emulated server knows, and the operations that change it.

:class:`~gleitzeit_llm.testing.OllamaEmulator` owns one and passes it to the handlers it serves
(:class:`~gleitzeit_llm.testing.api.OllamaApi`, :class:`~gleitzeit_llm.testing.admin.AdminApi`),
so the handlers never import the emulator and nothing reaches into another object's private
fields. The emulator itself keeps only the socket server and its thread.

Threads: the server loop (handlers, scheduler) and test threads (the emulator's methods) both
use the state. The scheduler belongs to the loop: :meth:`EmulatorState.call` runs a function
there (directly when already on it). Faults, the request log and tool scripts lock themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from gleitzeit_llm.testing.faults import FaultState
from gleitzeit_llm.testing.generation import Responder
from gleitzeit_llm.testing.models import EmulatedModel, ModelSpec, as_model, lookup_key
from gleitzeit_llm.testing.promptcache import Vocabulary
from gleitzeit_llm.testing.requestlog import RequestLog, RequestRecord
from gleitzeit_llm.testing.scheduler import Scheduler
from gleitzeit_llm.testing.settings import Settings
from gleitzeit_llm.testing.toolcalls import ToolScripts
from gleitzeit_llm.testing.wire import FOREVER, ApiError, parse_keep_alive

__all__ = ["EmulatorState", "duration_seconds"]

T = TypeVar("T")


def duration_seconds(value: float | str | None, name: str) -> float | None:
    """A ``keep_alive``-style setting in seconds (``"5m"``, ``300``; negative: forever)."""
    if value is None:
        return None
    try:
        seconds = parse_keep_alive(value)
    except ApiError as exc:
        raise ValueError(f"{name}: {exc.message}") from None
    return -1.0 if seconds == FOREVER else seconds


class EmulatorState:
    """The settings, installed models, scheduler, faults, request log and tool scripts of a server.

    Args:
        settings: validated settings (shared with the scheduler).
        models: installed models by lookup key.
        loaded: lookup keys of the models resident after every start.
        responder: ``fn(GenerationRequest) -> str | Reply | None`` choosing reply text.
        seed: seed of the RNG behind ``error_rate``.
    """

    def __init__(
        self,
        settings: Settings,
        models: dict[str, EmulatedModel],
        loaded: list[str],
        responder: Responder | None,
        seed: int | None,
    ) -> None:
        self.settings = settings
        #: Installed models by lookup key; replaced, never changed in place, so a reader on the loop
        #: iterates a stable dict while a test thread installs a model.
        self.models = models
        #: Lookup keys of the models made resident at (every) start.
        self.initially_loaded = loaded
        self.responder = responder
        self.log = RequestLog()
        #: The server loop and its thread, while there is one (set by :meth:`bind`).
        self.loop: asyncio.AbstractEventLoop | None = None  # before faults: setting them signals the loop
        self.thread: threading.Thread | None = None
        #: ``http://host:port`` while the server listens, else None.
        self.url: str | None = None
        self.faults = FaultState(seed, on_change=self._signal_faults)
        self.scheduler = Scheduler(settings, on_change=self.log.notify)
        self.tools = ToolScripts()
        #: Token ids of ``/api/generate``'s ``context`` (see :class:`.promptcache.Vocabulary`).
        self.vocab = Vocabulary()
        self._faults_event: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        """Whether the server listens now."""
        return self.url is not None

    # -- the server loop -------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop | None, thread: threading.Thread | None) -> None:
        """Attach the server loop and the thread running it (None, None: detach)."""
        self.loop, self.thread = loop, thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server loop from another thread and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def call(self, fn: Callable[..., T], *args: Any) -> T | None:
        """Run ``fn`` on the server loop (directly when already there); None if there is no loop."""
        if self.loop is None:
            return None
        if self.thread is not None and threading.current_thread() is self.thread:
            return fn(*args)

        async def call() -> T:
            return fn(*args)

        return self.run(call())

    # -- configuration and models ----------------------------------------------------------

    def configure(self, **settings: Any) -> None:
        """Change settings at run time (``keep_alive`` also as a duration string)."""
        if "keep_alive" in settings:
            settings["keep_alive"] = duration_seconds(settings["keep_alive"], "keep_alive") or 0.0
        self.settings.update(**settings)
        self.call(self.scheduler.apply_settings)

    def add_model(self, model: ModelSpec) -> EmulatedModel:
        """Install a model (replacing one of the same name)."""
        emulated = as_model(model)
        self.models = {**self.models, emulated.key: emulated}
        return emulated

    def remove_model(self, name: str) -> None:
        """Uninstall a model and unload it."""
        key = lookup_key(name)
        self.models = {k: v for k, v in self.models.items() if k != key}
        self.call(self.scheduler.unload, key)

    def load(self, name: str, keep_alive: float | str | None = None) -> None:
        """Make a model resident now (or at start, when not listening)."""
        key = lookup_key(name)
        model = self.models.get(key)
        if model is None:
            raise ValueError(f"model {name!r} is not installed")
        seconds = duration_seconds(keep_alive, "keep_alive")
        if self.loop is None or not self.running:
            if key not in self.initially_loaded:
                self.initially_loaded.append(key)
            return
        self.call(self.scheduler.preload, model, seconds)

    def unload(self, name: str | None = None) -> None:
        """Unload one model (or all) at once, even if busy."""
        key = None if name is None else lookup_key(name)
        if self.loop is None or not self.running:
            self.initially_loaded = [k for k in self.initially_loaded if key not in (None, k)]
            return
        self.call(self.scheduler.unload, key)

    def loaded_models(self) -> list[str]:
        """``name:tag`` of resident (loaded or loading) models."""
        if not self.running:
            return []
        return [r.model.name for r in list(self.scheduler.runners.values()) if r.state != "pending"]

    # -- faults ----------------------------------------------------------------------------

    def _signal_faults(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fire_faults_event)
        self.log.notify()

    def _fire_faults_event(self) -> None:
        event, self._faults_event = self._faults_event, None
        if event is not None:
            event.set()

    async def faults_changed(self) -> None:
        """Wait (on the server loop) until the faults change."""
        if self._faults_event is None:
            self._faults_event = asyncio.Event()
        await self._faults_event.wait()

    # -- the request log and statistics ----------------------------------------------------

    def requests_for(self, path: str | None = None, model: str | None = None) -> list[RequestRecord]:
        """Logged requests to ``path`` and/or for ``model`` (either spelling of the name)."""
        key = None if model is None else lookup_key(model)
        return [
            r
            for r in self.log.snapshot()
            if (path is None or r.path == path)
            and (key is None or lookup_key(r.model_name or r.model or "") == key)
        ]

    def clear_log(self) -> None:
        """Forget logged requests and the load/unload/concurrency statistics."""
        self.log.clear()
        self.scheduler.stats.clear()

    def max_concurrency_seen(self, model: str | None = None) -> int:
        """Most requests generating at once (on this server, or for one model)."""
        stats = self.scheduler.stats
        if model is None:
            return stats.max_concurrency
        return self._for_model(stats.max_model_concurrency, model)

    def load_count(self, model: str | None = None) -> int:
        """Cold loads completed (of one model, or all)."""
        return self._count(self.scheduler.stats.loads, model)

    def unload_count(self, model: str | None = None) -> int:
        """Unloads of one model, or all."""
        return self._count(self.scheduler.stats.unloads, model)

    def _count(self, counts: Mapping[str, int], model: str | None) -> int:
        return sum(counts.values()) if model is None else self._for_model(counts, model)

    def _for_model(self, counts: Mapping[str, int], model: str) -> int:
        # Statistics are kept by the installed name (``name:tag``); accept any spelling of it.
        installed = self.models.get(lookup_key(model))
        return counts.get(installed.name if installed else model, 0)

    def in_flight(self, model: str | None = None) -> int:
        """Requests holding a model right now (waiting for a slot or generating)."""
        runners = list(self.scheduler.runners.values())
        if model is not None:
            key = lookup_key(model)
            runners = [r for r in runners if r.model.key == key]
        return sum(r.refcount for r in runners)

    def generating(self, model: str | None = None) -> int:
        """Requests generating right now (holding a slot)."""
        if model is None:
            return self.scheduler.generating
        runner = self.scheduler.runners.get(lookup_key(model))
        return runner.generating if runner else 0

    # -- prompt caches ---------------------------------------------------------------------

    def prompt_caches(self, model: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """``{name:tag: [slot, ...]}`` of the loaded models' prompt caches (or one model's)."""

        def read() -> dict[str, list[dict[str, Any]]]:
            key = None if model is None else lookup_key(model)
            return {
                r.model.name: r.cache.describe()
                for r in self.scheduler.runners.values()
                if r.state != "pending" and key in (None, r.model.key)
            }

        return self.call(read) or {}

    def clear_prompt_caches(self, model: str | None = None) -> None:
        """Empty the prompt caches of every loaded model (or one), as a runner restart would."""

        def clear() -> None:
            key = None if model is None else lookup_key(model)
            for runner in self.scheduler.runners.values():
                if key in (None, runner.model.key):
                    runner.cache.clear()

        self.call(clear)
