"""``OllamaEmulator``: a real HTTP server on loopback that behaves like one Ollama instance."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from gleitzeit_llm.testing.admin import AdminApi
from gleitzeit_llm.testing.api import OllamaApi
from gleitzeit_llm.testing.faults import Faults, FaultState
from gleitzeit_llm.testing.generation import Responder
from gleitzeit_llm.testing.http import HttpServer, require_basic_auth
from gleitzeit_llm.testing.models import EmulatedModel, ModelSpec, as_models, lookup_key
from gleitzeit_llm.testing.requestlog import RequestLog, RequestRecord
from gleitzeit_llm.testing.scheduler import Scheduler
from gleitzeit_llm.testing.settings import Settings
from gleitzeit_llm.testing.state import EmulatorState, duration_seconds
from gleitzeit_llm.testing.toolcalls import ToolCallSpec

__all__ = ["DEFAULT_MODELS", "OllamaEmulator"]

#: Installed when ``models`` is not given: a chat model, a thinking model, an embedding model.
DEFAULT_MODELS: tuple[str, ...] = ("llama3.2", "qwen3", "nomic-embed-text")


class OllamaEmulator:
    """An emulated Ollama server: real sockets, Ollama's wire format, a model of its scheduler.

    ::

        with OllamaEmulator(models=["llama3.2", "nomic-embed-text"], time_scale=0.01) as emu:
            httpx.post(f"{emu.url}/api/chat", json={...})
            assert emu.load_count("llama3.2") == 1

    It listens on ``host:port`` (port 0 picks a free one, kept across :meth:`stop`/:meth:`start`)
    and serves ``/``, ``/api/version``, ``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/chat``,
    ``/api/generate``, ``/api/embed`` and ``/api/embeddings`` byte-for-byte like Ollama, plus a
    control API under ``/__emulator__/`` (see :class:`~gleitzeit_llm.testing.admin.AdminApi`).
    The server runs on its own event loop in a daemon thread, so sync clients, async clients on
    any loop, and many emulators in one process all work. Use it as a context manager (``with`` or
    ``async with``) or call :meth:`start` and :meth:`close`.

    **Time scale.** Every duration the emulator models -- cold load (``load_time``), time to first
    token (``ttft`` plus ``prompt_tokens / prompt_tokens_per_second``), token generation
    (``tokens_per_second``), ``keep_alive`` expiry, fault latencies -- is given in *modelled*
    seconds and actually waited for ``modelled * time_scale`` real seconds. ``time_scale=0.01``
    runs everything 100x faster, ``0`` makes it instant (then idle models never expire). The
    durations in responses (``load_duration``, ``prompt_eval_duration``, ``eval_duration``,
    ``total_duration``) are the modelled ones, consistent with each other; real waiting in
    queues is divided by ``time_scale`` before it is reported, so ``total_duration -
    load_duration - prompt_eval_duration - eval_duration`` is the modelled queue time.
    ``expires_at`` in ``/api/ps`` is the wall clock plus the modelled ``keep_alive``.

    **Behaviour.** ``num_parallel`` requests per loaded model generate at once; more wait without
    bound (visible in ``total_duration``). Each of those slots keeps a prompt cache: a request
    reuses the longest prefix its slot holds and only the rest costs prompt time
    (``prompt_eval_duration``; ``prompt_eval_count`` counts the whole prompt, as Ollama does; the
    request log has ``cached_tokens``; see :mod:`~gleitzeit_llm.testing.promptcache`). At most
    ``max_loaded_models`` models are resident; a load evicts the least recently used idle one, or
    waits while all are busy. More than ``max_queue`` requests waiting for a load get 503. Replies
    are deterministic (seeded by model and prompt); set :attr:`responder` for specific text,
    :meth:`script_tool_calls` for tool calls, :meth:`set_faults` for failures. All knobs can change
    at run time (:meth:`configure`).

    Args:
        models: installed models: names (``"llama3.2"`` means ``llama3.2:latest``),
            :class:`EmulatedModel` objects, or mappings of their fields. Defaults to
            :data:`DEFAULT_MODELS`.
        loaded: models resident from the start (every start: a restarted server starts fresh).
        keep_alive: default ``keep_alive`` (seconds or a duration string like ``"5m"``).
        responder: ``fn(GenerationRequest) -> str | Reply | None`` to choose reply text.
        seed: seed of the RNG behind ``error_rate`` (reproducible failures).
        faults: faults in force from the start.
        ssl_context: a server-side TLS context: serve HTTPS (``url`` starts with ``https://``).
        basic_auth: ``(user, password)``: every request without them gets 401, as behind a
            reverse proxy that asks for credentials (``http://user:password@host`` passes).
        Other keyword arguments are :class:`~gleitzeit_llm.testing.settings.Settings` fields.
    """

    def __init__(
        self,
        models: Iterable[ModelSpec] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        loaded: Iterable[str] = (),
        num_parallel: int = 1,
        max_loaded_models: int = 3,
        max_queue: int = 512,
        keep_alive: float | str = "5m",
        load_time: float = 1.0,
        ttft: float = 0.02,
        prompt_tokens_per_second: float = 2000.0,
        prompt_cache: bool = True,
        multiuser_cache: bool = False,
        tokens_per_second: float = 50.0,
        reply_tokens: int = 12,
        thinking_tokens: int = 8,
        time_scale: float = 1.0,
        version: str = "0.12.6",
        responder: Responder | None = None,
        seed: int | None = 0,
        faults: Faults | Mapping[str, Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        settings = Settings(
            num_parallel=num_parallel,
            max_loaded_models=max_loaded_models,
            max_queue=max_queue,
            keep_alive=duration_seconds(keep_alive, "keep_alive") or 0.0,
            load_time=load_time,
            ttft=ttft,
            prompt_tokens_per_second=prompt_tokens_per_second,
            prompt_cache=prompt_cache,
            multiuser_cache=multiuser_cache,
            tokens_per_second=tokens_per_second,
            reply_tokens=reply_tokens,
            thinking_tokens=thinking_tokens,
            time_scale=time_scale,
            version=version,
        )
        settings.validate()
        installed = as_models(DEFAULT_MODELS if models is None else models)
        initially_loaded = [lookup_key(name) for name in loaded]
        for key in initially_loaded:
            if key not in installed:
                raise ValueError(f"loaded model {key!r} is not among the installed models")
        #: What the server knows, shared with its request handlers (see :mod:`.state`).
        self.state = EmulatorState(settings, installed, initially_loaded, responder, seed)
        if faults is not None:
            self.state.faults.replace_all(faults if isinstance(faults, Faults) else Faults(**faults))
        # Public since the first release; the state never replaces these objects.
        #: The settings in force (change them with :meth:`configure`).
        self.settings: Settings = self.state.settings
        self.log: RequestLog = self.state.log
        self.faults: FaultState = self.state.faults
        self.scheduler: Scheduler = self.state.scheduler
        self._api = OllamaApi(self.state, admin=AdminApi(self.state).handle)
        handler = (
            self._api.handle if basic_auth is None else require_basic_auth(self._api.handle, *basic_auth)
        )
        self._http = HttpServer(handler, host, port, ssl_context)
        self._lifecycle = threading.Lock()

    @property
    def responder(self) -> Responder | None:
        """``fn(GenerationRequest) -> str | Reply | None``; ``None`` uses the built-in text."""
        return self.state.responder

    @responder.setter
    def responder(self, responder: Responder | None) -> None:
        self.state.responder = responder

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def port(self) -> int:
        """The port (known after the first start when 0 was asked for)."""
        return self._http.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``ssl_context``)"""
        if self._http.port == 0:
            raise RuntimeError("the emulator has not been started yet")
        return f"{'https' if self._http.ssl_context else 'http'}://{self.host}:{self.port}"

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted so far (across restarts): shows whether clients reuse them."""
        return self._http.accepted

    @property
    def running(self) -> bool:
        """Whether it is listening now."""
        return self._http.listening

    def start(self) -> OllamaEmulator:
        """Listen (again, on the same port); models in ``loaded`` become resident."""
        with self._lifecycle:
            if self.state.loop is None:
                self._start_thread()
            self.state.run(self._async_start())
        return self

    def stop(self) -> None:
        """Stop listening and reset open connections: clients see refused/reset connections.

        Like a server process dying: in-flight requests end, resident models are forgotten, the
        request log and settings stay. :meth:`start` listens again on the same port. Returns once
        every connection it accepted is closed.
        """
        with self._lifecycle:
            if self.state.loop is not None:
                self.state.run(self._async_stop())

    def restart(self) -> OllamaEmulator:
        """:meth:`stop` then :meth:`start` on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and release the thread and its event loop (idempotent)."""
        with self._lifecycle:
            loop, thread = self.state.loop, self.state.thread
            if loop is None or thread is None:
                return
            self.state.run(self._async_stop())
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            self.state.bind(None, None)

    def __enter__(self) -> OllamaEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> OllamaEmulator:
        # The server lives on its own loop: starting it must not block the caller's loop.
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        where = self.url if self._http.port else "not started"
        return f"<OllamaEmulator {where} models={[m.name for m in self.state.models.values()]}>"

    def _start_thread(self) -> None:
        # The HTTP server accepts with add_reader, which Windows' default proactor loop lacks.
        loop = asyncio.SelectorEventLoop() if sys.platform == "win32" else asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                _drain_loop(loop)

        thread = threading.Thread(target=run, name=f"ollama-emulator-{id(self):x}", daemon=True)
        thread.start()
        ready.wait()
        self.state.bind(loop, thread)

    async def _async_start(self) -> None:
        if self._http.listening:
            return
        await self._http.start()
        self.state.url = self.url
        for key in self.state.initially_loaded:
            model = self.state.models.get(key)
            if model is not None:
                self.state.scheduler.preload(model)

    async def _async_stop(self) -> None:
        await self._http.stop()
        self.state.url = None
        self.state.scheduler.reset()
        self.state.log.notify()

    # -- configuration ---------------------------------------------------------------------

    def configure(self, **settings: Any) -> None:
        """Change behaviour at run time, e.g. ``configure(num_parallel=4, time_scale=0)``.

        Names are :class:`~gleitzeit_llm.testing.settings.Settings` fields; ``keep_alive`` also
        accepts a duration string.
        """
        self.state.configure(**settings)

    @property
    def models(self) -> list[EmulatedModel]:
        """Installed models."""
        return list(self.state.models.values())

    def add_model(self, model: ModelSpec) -> EmulatedModel:
        """Install a model (replacing one of the same name)."""
        return self.state.add_model(model)

    def remove_model(self, name: str) -> None:
        """Uninstall a model (it is unloaded too); later requests get 404."""
        self.state.remove_model(name)

    def load(self, name: str, keep_alive: float | str | None = None) -> None:
        """Make a model resident now, without load time (or at start, if not started)."""
        self.state.load(name, keep_alive)

    def unload(self, name: str | None = None) -> None:
        """Unload one model (or all) at once, even if busy."""
        self.state.unload(name)

    def loaded_models(self) -> list[str]:
        """``name:tag`` of resident (loaded or loading) models, as ``/api/ps`` lists them."""
        return self.state.loaded_models()

    # -- tool calls ------------------------------------------------------------------------

    def script_tool_calls(self, calls: Sequence[ToolCallSpec], *, persistent: bool = False) -> None:
        """Make the next chat request that carries ``tools`` answer with these tool calls.

        Each call is ``{"name": ..., "arguments": {...}}`` (or just a tool name: arguments are then
        made up from the tool's parameter schema). Scripts queue up, one per request. With
        ``persistent=True`` the calls become the default answer to every chat with tools whose
        last message is not a tool result (so agent loops end).
        """
        self.state.tools.script(calls, persistent=persistent)

    def clear_tool_calls(self) -> None:
        """Forget scripted and default tool calls."""
        self.state.tools.clear()

    # -- faults ----------------------------------------------------------------------------

    def set_faults(self, **faults: Any) -> Faults:
        """Switch faults on or off (thread-safe); see :class:`Faults` for the names.

        ``set_faults(hang=True)``, ``set_faults(error_rate=0.3)``, ``set_faults(drop_after_chunks=2)``,
        ``set_faults(busy=True)``, ``set_faults(slow_factor=5)``, ``set_faults(fail_next=2)``...
        """
        return self.state.faults.set(**faults)

    def clear_faults(self) -> None:
        """Back to healthy (a hanging request then proceeds)."""
        self.state.faults.clear()

    @contextlib.contextmanager
    def fault(self, **faults: Any) -> Iterator[Faults]:
        """Faults in force inside a ``with`` block; the previous ones come back after it."""
        state = self.state.faults
        previous = state.current
        try:
            yield state.set(**faults)
        finally:
            state.replace_all(previous)

    def seed(self, seed: int | None) -> None:
        """Re-seed the RNG behind ``error_rate``."""
        self.state.faults.seed(seed)

    # -- the request log -------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request since the start or :meth:`clear_log`, oldest first (admin calls excluded)."""
        return self.state.log.snapshot()

    def requests_for(self, path: str | None = None, model: str | None = None) -> list[RequestRecord]:
        """Requests to ``path`` and/or for ``model`` (either spelling of the name)."""
        return self.state.requests_for(path, model)

    def clear_log(self) -> None:
        """Forget logged requests and the load/unload/concurrency statistics."""
        self.state.clear_log()

    def max_concurrency_seen(self, model: str | None = None) -> int:
        """Most requests generating at once (on this server, or for one model)."""
        return self.state.max_concurrency_seen(model)

    def load_count(self, model: str | None = None) -> int:
        """Cold loads completed (of one model, or all); pre-loaded models do not count."""
        return self.state.load_count(model)

    def unload_count(self, model: str | None = None) -> int:
        """Unloads (expiry, eviction, unload requests) of one model, or all."""
        return self.state.unload_count(model)

    def in_flight(self, model: str | None = None) -> int:
        """Requests holding a model right now (waiting for a slot or generating)."""
        return self.state.in_flight(model)

    def generating(self, model: str | None = None) -> int:
        """Requests generating right now (holding a slot)."""
        return self.state.generating(model)

    def prompt_caches(self, model: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """The loaded models' prompt-cache slots: ``{name:tag: [{"slot", "tokens", "in_use", ...}]}``."""
        return self.state.prompt_caches(model)

    def clear_prompt_caches(self, model: str | None = None) -> None:
        """Empty the prompt caches (of one model, or all) without unloading."""
        self.state.clear_prompt_caches(model)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate()`` holds (re-checked whenever the server state changes).

        Raises ``TimeoutError`` after ``timeout`` seconds. Do not call it from a coroutine that
        drives the clients (it blocks the loop); use :meth:`wait_for_async` there.
        """
        if not self.state.log.wait_for(predicate, timeout):
            raise TimeoutError(f"condition not met within {timeout} s")

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """:meth:`wait_for` for coroutines (waits in a worker thread)."""
        await asyncio.to_thread(self.wait_for, predicate, timeout)


def _drain_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on a stopped loop and close it without warnings."""
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
