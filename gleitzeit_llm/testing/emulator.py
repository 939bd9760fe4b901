"""``OllamaEmulator``: a real HTTP server on loopback that behaves like one Ollama instance."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from gleitzeit_llm.testing.admin import AdminApi
from gleitzeit_llm.testing.api import OllamaApi
from gleitzeit_llm.testing.faults import Faults, FaultState
from gleitzeit_llm.testing.generation import GenerationRequest, Responder, value_for_schema
from gleitzeit_llm.testing.http import HttpServer, require_basic_auth
from gleitzeit_llm.testing.models import EmulatedModel, ModelSpec, as_model, as_models, lookup_key
from gleitzeit_llm.testing.requestlog import RequestLog, RequestRecord
from gleitzeit_llm.testing.scheduler import Scheduler
from gleitzeit_llm.testing.settings import Settings
from gleitzeit_llm.testing.wire import FOREVER, ApiError, parse_keep_alive

__all__ = ["DEFAULT_MODELS", "OllamaEmulator"]

#: Installed when ``models`` is not given: a chat model, a thinking model, an embedding model.
DEFAULT_MODELS: tuple[str, ...] = ("llama3.2", "qwen3", "nomic-embed-text")

ToolCallSpec = str | Mapping[str, Any]


def _seconds(value: float | str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_keep_alive(value)
    except ApiError as exc:
        raise ValueError(f"{name}: {exc.message}") from None
    return -1.0 if seconds == FOREVER else seconds


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
    bound (visible in ``total_duration``). At most ``max_loaded_models`` models are resident; a
    load evicts the least recently used idle one, or waits while all are busy. More than
    ``max_queue`` requests waiting for a load get 503. Replies are deterministic (seeded by model
    and prompt); set :attr:`responder` for specific text, :meth:`script_tool_calls` for tool calls,
    :meth:`set_faults` for failures. All knobs can change at run time (:meth:`configure`).

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
        self.settings = Settings(
            num_parallel=num_parallel,
            max_loaded_models=max_loaded_models,
            max_queue=max_queue,
            keep_alive=_seconds(keep_alive, "keep_alive") or 0.0,
            load_time=load_time,
            ttft=ttft,
            prompt_tokens_per_second=prompt_tokens_per_second,
            tokens_per_second=tokens_per_second,
            reply_tokens=reply_tokens,
            thinking_tokens=thinking_tokens,
            time_scale=time_scale,
            version=version,
        )
        self.settings.validate()
        self._models: dict[str, EmulatedModel] = as_models(DEFAULT_MODELS if models is None else models)
        self._initially_loaded = [lookup_key(name) for name in loaded]
        for key in self._initially_loaded:
            if key not in self._models:
                raise ValueError(f"loaded model {key!r} is not among the installed models")
        #: ``fn(GenerationRequest) -> str | Reply | None``; ``None`` uses the built-in text.
        self.responder: Responder | None = responder
        self.log = RequestLog()
        self._loop: asyncio.AbstractEventLoop | None = None  # before faults: setting them signals the loop
        self._thread: threading.Thread | None = None
        self.faults = FaultState(seed, on_change=self._signal_faults)
        if faults is not None:
            self.faults.replace_all(faults if isinstance(faults, Faults) else Faults(**faults))
        self.scheduler = Scheduler(self.settings, on_change=self.log.notify)
        self._tool_scripts: collections.deque[list[dict[str, Any]]] = collections.deque()
        self._tool_default: list[dict[str, Any]] | None = None
        self._tool_lock = threading.Lock()
        self._api = OllamaApi(self)
        self._admin = AdminApi(self)
        handler = (
            self._api.handle if basic_auth is None else require_basic_auth(self._api.handle, *basic_auth)
        )
        self._http = HttpServer(handler, host, port, ssl_context)
        self._lifecycle = threading.Lock()
        self._faults_event: asyncio.Event | None = None

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
            if self._loop is None:
                self._start_thread()
            self._run(self._async_start())
        return self

    def stop(self) -> None:
        """Stop listening and reset open connections: clients see refused/reset connections.

        Like a server process dying: in-flight requests end, resident models are forgotten, the
        request log and settings stay. :meth:`start` listens again on the same port. Returns once
        every connection it accepted is closed.
        """
        with self._lifecycle:
            if self._loop is not None:
                self._run(self._async_stop())

    def restart(self) -> OllamaEmulator:
        """:meth:`stop` then :meth:`start` on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and release the thread and its event loop (idempotent)."""
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            self._run(self._async_stop())
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            self._loop = self._thread = None

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
        return f"<OllamaEmulator {where} models={[m.name for m in self._models.values()]}>"

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
        self._loop, self._thread = loop, thread

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _async_start(self) -> None:
        if self._http.listening:
            return
        await self._http.start()
        for key in self._initially_loaded:
            model = self._models.get(key)
            if model is not None:
                self.scheduler.preload(model)

    async def _async_stop(self) -> None:
        await self._http.stop()
        self.scheduler.reset()
        self.log.notify()

    def _on_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the server loop (directly when already there); None if not started."""
        if self._loop is None:
            return None
        if self._on_loop_thread():
            return fn(*args)

        async def call() -> Any:
            return fn(*args)

        return self._run(call())

    # -- configuration ---------------------------------------------------------------------

    def configure(self, **settings: Any) -> None:
        """Change behaviour at run time, e.g. ``configure(num_parallel=4, time_scale=0)``.

        Names are :class:`~gleitzeit_llm.testing.settings.Settings` fields; ``keep_alive`` also
        accepts a duration string.
        """
        if "keep_alive" in settings:
            settings["keep_alive"] = _seconds(settings["keep_alive"], "keep_alive") or 0.0
        self.settings.update(**settings)
        self._call(self.scheduler.apply_settings)

    @property
    def models(self) -> list[EmulatedModel]:
        """Installed models."""
        return list(self._models.values())

    def add_model(self, model: ModelSpec) -> EmulatedModel:
        """Install a model (replacing one of the same name)."""
        emulated = as_model(model)
        self._models = {**self._models, emulated.key: emulated}
        return emulated

    def remove_model(self, name: str) -> None:
        """Uninstall a model (it is unloaded too); later requests get 404."""
        key = lookup_key(name)
        self._models = {k: v for k, v in self._models.items() if k != key}
        self._call(self.scheduler.unload, key)

    def load(self, name: str, keep_alive: float | str | None = None) -> None:
        """Make a model resident now, without load time (or at start, if not started)."""
        key = lookup_key(name)
        model = self._models.get(key)
        if model is None:
            raise ValueError(f"model {name!r} is not installed")
        seconds = _seconds(keep_alive, "keep_alive")
        if self._loop is None or not self.running:
            if key not in self._initially_loaded:
                self._initially_loaded.append(key)
            return
        self._call(self.scheduler.preload, model, seconds)

    def unload(self, name: str | None = None) -> None:
        """Unload one model (or all) at once, even if busy."""
        key = None if name is None else lookup_key(name)
        if self._loop is None or not self.running:
            self._initially_loaded = [k for k in self._initially_loaded if key not in (None, k)]
            return
        self._call(self.scheduler.unload, key)

    def loaded_models(self) -> list[str]:
        """``name:tag`` of resident (loaded or loading) models, as ``/api/ps`` lists them."""
        if not self.running:
            return []
        return [r.model.name for r in list(self.scheduler.runners.values()) if r.state != "pending"]

    # -- tool calls ------------------------------------------------------------------------

    def script_tool_calls(self, calls: Sequence[ToolCallSpec], *, persistent: bool = False) -> None:
        """Make the next chat request that carries ``tools`` answer with these tool calls.

        Each call is ``{"name": ..., "arguments": {...}}`` (or just a tool name: arguments are then
        made up from the tool's parameter schema). Scripts queue up, one per request. With
        ``persistent=True`` the calls become the default answer to every chat with tools whose
        last message is not a tool result (so agent loops end).
        """
        script = [_tool_call_spec(call) for call in calls]
        with self._tool_lock:
            if persistent:
                self._tool_default = script
            else:
                self._tool_scripts.append(script)

    def clear_tool_calls(self) -> None:
        """Forget scripted and default tool calls."""
        with self._tool_lock:
            self._tool_scripts.clear()
            self._tool_default = None

    def _take_tool_calls(self, request: GenerationRequest) -> list[dict[str, Any]] | None:
        with self._tool_lock:
            if self._tool_scripts:
                script = self._tool_scripts.popleft()
            elif self._tool_default is not None and not _answers_tool(request):
                script = self._tool_default
            else:
                return None
        return [_fill_arguments(call, request, index) for index, call in enumerate(script)]

    # -- faults ----------------------------------------------------------------------------

    def set_faults(self, **faults: Any) -> Faults:
        """Switch faults on or off (thread-safe); see :class:`Faults` for the names.

        ``set_faults(hang=True)``, ``set_faults(error_rate=0.3)``, ``set_faults(drop_after_chunks=2)``,
        ``set_faults(busy=True)``, ``set_faults(slow_factor=5)``, ``set_faults(fail_next=2)``...
        """
        return self.faults.set(**faults)

    def clear_faults(self) -> None:
        """Back to healthy (a hanging request then proceeds)."""
        self.faults.clear()

    @contextlib.contextmanager
    def fault(self, **faults: Any) -> Iterator[Faults]:
        """Faults in force inside a ``with`` block; the previous ones come back after it."""
        previous = self.faults.current
        try:
            yield self.faults.set(**faults)
        finally:
            self.faults.replace_all(previous)

    def seed(self, seed: int | None) -> None:
        """Re-seed the RNG behind ``error_rate``."""
        self.faults.seed(seed)

    def _signal_faults(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fire_faults_event)
        self.log.notify()

    def _fire_faults_event(self) -> None:
        event, self._faults_event = self._faults_event, None
        if event is not None:
            event.set()

    async def _faults_changed(self) -> None:
        if self._faults_event is None:
            self._faults_event = asyncio.Event()
        await self._faults_event.wait()

    # -- the request log -------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request since the start or :meth:`clear_log`, oldest first (admin calls excluded)."""
        return self.log.snapshot()

    def requests_for(self, path: str | None = None, model: str | None = None) -> list[RequestRecord]:
        """Requests to ``path`` and/or for ``model`` (either spelling of the name)."""
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
        stats = self.scheduler.stats
        stats.loads.clear()
        stats.unloads.clear()
        stats.max_concurrency = 0
        stats.max_model_concurrency.clear()

    def max_concurrency_seen(self, model: str | None = None) -> int:
        """Most requests generating at once (on this server, or for one model)."""
        stats = self.scheduler.stats
        if model is None:
            return stats.max_concurrency
        model_obj = self._models.get(lookup_key(model))
        return stats.max_model_concurrency.get(model_obj.name if model_obj else model, 0)

    def load_count(self, model: str | None = None) -> int:
        """Cold loads completed (of one model, or all); pre-loaded models do not count."""
        loads = self.scheduler.stats.loads
        if model is None:
            return sum(loads.values())
        model_obj = self._models.get(lookup_key(model))
        return loads.get(model_obj.name if model_obj else model, 0)

    def unload_count(self, model: str | None = None) -> int:
        """Unloads (expiry, eviction, unload requests) of one model, or all."""
        unloads = self.scheduler.stats.unloads
        if model is None:
            return sum(unloads.values())
        model_obj = self._models.get(lookup_key(model))
        return unloads.get(model_obj.name if model_obj else model, 0)

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

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate()`` holds (re-checked whenever the server state changes).

        Raises ``TimeoutError`` after ``timeout`` seconds. Do not call it from a coroutine that
        drives the clients (it blocks the loop); use :meth:`wait_for_async` there.
        """
        if not self.log.wait_for(predicate, timeout):
            raise TimeoutError(f"condition not met within {timeout} s")

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """:meth:`wait_for` for coroutines (waits in a worker thread)."""
        await asyncio.to_thread(self.wait_for, predicate, timeout)


def _tool_call_spec(call: ToolCallSpec) -> dict[str, Any]:
    if isinstance(call, str):
        return {"name": call}
    if "function" in call and isinstance(call["function"], Mapping):
        call = call["function"]
    if "name" not in call:
        raise ValueError(f"a scripted tool call needs a name: {call!r}")
    result: dict[str, Any] = {"name": call["name"]}
    if call.get("arguments") is not None:
        arguments = call["arguments"]
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        result["arguments"] = dict(arguments)
    return result


def _answers_tool(request: GenerationRequest) -> bool:
    return bool(request.messages) and request.messages[-1].get("role") == "tool"


def _fill_arguments(call: dict[str, Any], request: GenerationRequest, index: int) -> dict[str, Any]:
    if "arguments" in call:
        return call
    schema: Any = {"type": "object", "properties": {}}
    for tool in request.tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and function.get("name") == call["name"]:
            schema = function.get("parameters") or schema
    arguments = value_for_schema(schema, f"{request.prompt}\x1f{call['name']}\x1f{index}")
    return {"name": call["name"], "arguments": arguments if isinstance(arguments, dict) else {}}


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
