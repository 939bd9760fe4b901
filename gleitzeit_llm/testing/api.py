"""The Ollama routes of the emulator: validation, scheduling, generation and the bytes on the wire.

Each handler follows the order of checks in Ollama's ``server/routes.go``, so that a client sees
the same status and message for the same mistake. Generation itself is modelled: it sleeps the
(scaled) time a real server would take and reports the modelled durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gleitzeit_llm.testing import model_admin
from gleitzeit_llm.testing.faults import BUSY_MESSAGE, Faults
from gleitzeit_llm.testing.generation import (
    GenerationRequest,
    Reply,
    count_tokens,
    default_reply,
    default_thinking,
    embed_text,
    format_text,
    normalize,
    split_tokens,
)
from gleitzeit_llm.testing.http import ConnectionDropped, Exchange, Handler, HttpRequest
from gleitzeit_llm.testing.models import EmulatedModel, resolve
from gleitzeit_llm.testing.names import folds_case, parse_name
from gleitzeit_llm.testing.promptcache import (
    DEFAULT_NUM_KEEP,
    chat_prompt_tokens,
    render_assistant,
    render_messages,
    tokenize,
    truncate_tokens,
)
from gleitzeit_llm.testing.requestlog import RequestRecord
from gleitzeit_llm.testing.scheduler import Lease, Runner
from gleitzeit_llm.testing.state import EmulatorState
from gleitzeit_llm.testing.wire import (
    ApiError,
    check_fields,
    decode_json_body,
    dumps,
    format_utc,
    go_quote,
    json_kind,
    parse_keep_alive,
)

__all__ = ["ADMIN_PREFIX", "OllamaApi"]

JSON = "application/json; charset=utf-8"
NDJSON = "application/x-ndjson"
PLAIN = "text/plain; charset=utf-8"
ADMIN_PREFIX = "/__emulator__/"

# path -> {method: handler name}; gin answers 405 for a known path with another method.
_ROUTES: dict[str, dict[str, str]] = {
    "/": {"GET": "_root", "HEAD": "_root"},
    "/api/version": {"GET": "_version", "HEAD": "_version"},
    "/api/tags": {"GET": "_tags", "HEAD": "_tags"},
    "/api/ps": {"GET": "_ps"},
    "/api/show": {"POST": "_show"},
    "/api/chat": {"POST": "_chat"},
    "/api/generate": {"POST": "_generate"},
    "/api/embed": {"POST": "_embed"},
    "/api/embeddings": {"POST": "_embeddings"},
    "/api/pull": {"POST": "_pull"},
    "/api/delete": {"DELETE": "_delete"},
    "/api/copy": {"POST": "_copy"},
}
_INFERENCE = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"})

_STR = (str,)
_BOOL = (bool,)
_INT = (int,)
_LIST = (list,)
# The JSON fields of Ollama's request structs: accepted Python types and the Go type for errors.
# A field has the same Go type in every struct that declares it.
_GO_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    **dict.fromkeys(("model", "name", "prompt", "suffix", "system", "template"), (_STR, "string")),
    **dict.fromkeys(("stream", "raw", "truncate", "shift", "logprobs", "verbose"), (_BOOL, "bool")),
    **dict.fromkeys(("top_logprobs", "dimensions"), (_INT, "int")),
    "options": ((dict,), "map[string]interface {}"),
    "messages": (_LIST, "[]api.Message"),
    "tools": (_LIST, "api.Tools"),
    "context": (_LIST, "[]int"),
    "images": (_LIST, "[]api.ImageData"),
}


def _struct(names: str) -> dict[str, tuple[tuple[type, ...], str]]:
    """Typed fields in Go's declaration order (check_fields reports the first bad one)."""
    return {name: _GO_TYPES[name] for name in names.split()}


_CHAT_FIELDS = _struct("model messages tools options stream truncate shift logprobs top_logprobs")
_GENERATE_FIELDS = _struct(
    "model prompt suffix system template context images options stream raw"
    " truncate shift logprobs top_logprobs"
)
_EMBED_FIELDS = _struct("model truncate dimensions options")
_EMBEDDINGS_FIELDS = _struct("model prompt options")
_SHOW_FIELDS = _struct("model name verbose")
_THINK_LEVELS = ("high", "medium", "low", "max")
_CALL_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _parse_think(value: Any) -> bool | str | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _THINK_LEVELS:
        return value
    shown = go_quote(value) if isinstance(value, str) else dumps(value)
    raise ApiError(400, f'invalid think value: {shown} (must be "high", "medium", "low", true, or false)')


def _thinks(think: bool | str | None) -> bool:
    return think is not None and think is not False and think != "none"


def _valid_name(name: str) -> bool:
    """``model.ParseName(name).IsValid()``."""
    return parse_name(name).is_valid()


@dataclass
class _Piece:
    """One streamed chunk: thinking text, content text or tool calls, and the tokens it costs."""

    content: str = ""
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tokens: int = 1


@dataclass
class _Plan:
    pieces: list[_Piece]
    done_reason: str
    #: The prompt's tokens as the runner evaluates them (after truncation).
    prompt: list[str]


#: ``fn(num_ctx) -> tokens`` of a request's rendered prompt.
_PromptTokens = Callable[[int], list[str]]


class _StreamEnded(Exception):
    """The stream was ended early by a fault (an error line was written)."""


class OllamaApi:
    """Routes requests to handlers; owns no state (it reads and drives the emulator's).

    Requests under :data:`ADMIN_PREFIX` go to ``admin`` (the control API), unlogged.
    """

    def __init__(self, state: EmulatorState, admin: Handler) -> None:
        self.state = state
        self._admin = admin
        self._ids = random.Random()

    # -- dispatch --------------------------------------------------------------------------

    async def handle(self, request: HttpRequest, ex: Exchange) -> None:
        if request.path.startswith(ADMIN_PREFIX):
            await self._admin(request, ex)
            return
        loop_start = time.monotonic()
        record = self.state.log.start(request.method, request.path, time.time(), request.headers)

        def complete() -> None:
            record.status = ex.status
            record.finished = True
            record.wall_time = time.monotonic() - loop_start
            self.state.log.notify()

        ex.before_end = complete
        try:
            route = _ROUTES.get(request.path)
            if route is None:
                await ex.send(404, "text/plain", b"404 page not found")
            elif request.method not in route:
                await ex.send(405, "text/plain", b"405 method not allowed")
            else:
                if request.path not in _INFERENCE and self.state.faults.current.affect_probes:
                    await self._hang_fault(record)
                    self._refusal_faults(record)
                await getattr(self, route[request.method])(request, ex, record)
        except ApiError as exc:
            record.error = exc.message
            if not ex.started:
                await self._send_json(ex, exc.status, {"error": exc.message}, exc.headers)
            elif not ex.finished:
                await ex.write((dumps({"error": exc.message}) + "\n").encode())
                await ex.end()
        except (asyncio.CancelledError, ConnectionError):
            record.cancelled = True
            raise
        except _StreamEnded:
            pass  # an error line ended the stream, as the fault asked
        except ConnectionDropped:
            raise
        finally:
            if not record.finished:  # cut, cancelled, or an error line ended the stream
                complete()

    async def _send_json(
        self, ex: Exchange, status: int, value: Any, headers: list[tuple[str, str]] | None = None
    ) -> None:
        await ex.send(status, JSON, dumps(value).encode(), headers)

    # -- faults ----------------------------------------------------------------------------

    async def _hang_fault(self, record: RequestRecord) -> None:
        if not self.state.faults.current.hang:
            return
        record.fault = "hang"
        self.state.log.notify()
        while self.state.faults.current.hang:
            await self.state.faults_changed()

    def _refusal_faults(self, record: RequestRecord) -> None:
        faults = self.state.faults.current
        if faults.busy:
            record.fault = "busy"
            retry_after = faults.busy_retry_after
            headers = None if retry_after is None else [("Retry-After", f"{retry_after:g}")]
            raise ApiError(faults.busy_status, BUSY_MESSAGE, headers)
        drawn = self.state.faults.draw_error()
        if drawn is not None:
            record.fault = "error"
            raise ApiError(*drawn)

    # -- probes ----------------------------------------------------------------------------

    async def _root(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        await ex.send(200, PLAIN, b"Ollama is running")

    async def _version(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        await self._send_json(ex, 200, {"version": self.state.settings.version})

    async def _tags(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        models = sorted(self.state.models.values(), key=lambda m: -int(m.modified_at or 0))
        await self._send_json(ex, 200, {"models": [m.tags_entry() for m in models]})

    async def _ps(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        await self._send_json(ex, 200, {"models": self.state.scheduler.ps()})

    async def _show(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        body = self._body(request, record, "ShowRequest", _SHOW_FIELDS)
        name = body.get("model") or body.get("name") or ""
        record.model = name or None
        if not name:
            raise ApiError(400, "model is required")
        model = self._find(name, "show")
        record.model_name = model.name
        shown = model.show()
        if not self.state.settings.show_architecture:
            del shown["model_info"]["general.architecture"]
        await self._send_json(ex, 200, shown)

    # -- request parsing -------------------------------------------------------------------

    def _body(
        self, request: HttpRequest, record: RequestRecord, struct: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        body = decode_json_body(request.body)
        record.body = body
        check_fields(body, struct, fields)
        if isinstance(body.get("model"), str):
            record.model = body["model"]
        record.options = body.get("options") if isinstance(body.get("options"), dict) else None
        record.keep_alive = body.get("keep_alive")
        record.format = body.get("format")
        return body

    def _find(self, name: str, route: str) -> EmulatedModel:
        """The model ``route`` reaches for ``name``, resolved as the reported version does (404 if none)."""
        fold = folds_case(route, self.state.settings.version)
        model = resolve(self.state.models, name, fold_case=fold) if name else None
        if model is None:
            if route == "embed":  # EmbedHandler leaves the lookup to the scheduler (handleScheduleError)
                raise ApiError(404, f"model {go_quote(name)} not found, try pulling it first")
            raise ApiError(404, f"model '{name}' not found")
        return model

    def _common(self, body: dict[str, Any], record: RequestRecord) -> tuple[bool, float | None]:
        """stream flag and keep_alive (decoded while binding in Ollama, so errors come first)."""
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        stream = body.get("stream") is not False
        record.stream = stream
        return stream, keep_alive

    # -- model management (testing/model_admin.py) -------------------------------------------

    async def _pull(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        await model_admin.pull(self.state, self._body(request, record, "PullRequest", {}), ex)

    async def _delete(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        await model_admin.delete(self.state, self._body(request, record, "DeleteRequest", {}), ex)

    async def _copy(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        await model_admin.copy(self.state, self._body(request, record, "CopyRequest", {}), ex)

    # -- chat and generate -----------------------------------------------------------------

    async def _chat(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        body = self._body(request, record, "ChatRequest", _CHAT_FIELDS)
        stream, keep_alive = self._common(body, record)
        think = _parse_think(body.get("think"))
        record.think = think
        tools = body.get("tools") or []
        record.tools = bool(tools)
        messages = body.get("messages") or []
        for message in messages:
            if not isinstance(message, dict):
                raise ApiError(
                    400, f"json: cannot unmarshal {json_kind(message)} into Go value of type api.Message"
                )
            content = message.get("content")
            if content is not None and not isinstance(content, str):
                raise ApiError(
                    400,
                    f"json: cannot unmarshal {json_kind(content)} into Go struct field "
                    "ChatRequest.messages.content of type string",
                )
        await self._hang_fault(record)
        name = body.get("model") or ""
        if not _valid_name(name):
            raise ApiError(400, "model is required")
        _check_top_logprobs(body)

        def generation() -> tuple[list[dict[str, Any]], str, _PromptTokens]:
            prompt = ""
            for message in reversed(messages):
                if message.get("role") == "user":
                    prompt = message.get("content") or ""
                    break
            truncate = body.get("truncate") is not False

            def tokens(num_ctx: int) -> list[str]:
                return chat_prompt_tokens(messages, tools, num_ctx, truncate)

            return messages, prompt, tokens

        await self._complete(
            "chat", ex, record, body, keep_alive, stream, think, tools, not messages, generation
        )

    async def _generate(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        body = self._body(request, record, "GenerateRequest", _GENERATE_FIELDS)
        stream, keep_alive = self._common(body, record)
        think = _parse_think(body.get("think"))
        record.think = think
        await self._hang_fault(record)
        name = body.get("model") or ""
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")
        if not _valid_name(name):
            # Ollama keeps answering 404 here for compatibility ("ideally invalid model name").
            raise ApiError(404, f"model '{name}' not found")
        _check_top_logprobs(body)
        prompt = body.get("prompt") or ""

        def generation() -> tuple[list[dict[str, Any]], str, _PromptTokens]:
            system = body.get("system") or ""
            messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": prompt})
            text = self._generate_prompt(body, messages)
            return messages, prompt, lambda num_ctx: tokenize(text)

        await self._complete(
            "generate", ex, record, body, keep_alive, stream, think, [], not prompt, generation
        )

    def _generate_prompt(self, body: Mapping[str, Any], messages: list[dict[str, Any]]) -> str:
        """The rendered prompt of /api/generate: ``context`` (detokenized), then the template."""
        prompt = body.get("prompt") or ""
        if body.get("raw"):
            return prompt
        suffix = body.get("suffix")
        if suffix:
            rendered = f"<|fim_prefix|>{prompt}<|fim_suffix|>{suffix}<|fim_middle|>"
        else:
            rendered = render_messages(messages)
        return self.state.vocab.text(body.get("context") or []) + rendered

    async def _complete(
        self,
        route: str,
        ex: Exchange,
        record: RequestRecord,
        body: dict[str, Any],
        keep_alive: float | None,
        stream: bool,
        think: bool | str | None,
        tools: list[Any],
        empty: bool,
        generation: Callable[[], tuple[list[dict[str, Any]], str, _PromptTokens]],
    ) -> None:
        """What /api/chat and /api/generate (``route``) share after parsing, in Ollama's order.

        ``empty`` (no messages, no prompt) makes the request a bare load, or an unload with
        ``keep_alive: 0``; ``generation()`` gives the conversation, the prompt (what a responder
        sees as ``prompt``) and a function from the runner's ``num_ctx`` to the prompt's tokens.
        """
        name = body.get("model") or ""
        model = self._find(name, route)
        record.model_name = model.name
        done = _chat_done if route == "chat" else _generate_done
        if empty and keep_alive == 0:
            record.action = "unload"
            self.state.scheduler.expire(model.key)
            await self._send_json(ex, 200, done(name, "unload"))
            return
        if not model.has("completion"):
            raise ApiError(400, f"{go_quote(name)} does not support {route}")
        if tools and not model.has("tools"):
            raise ApiError(400, f"{model.name} does not support tools")
        if _thinks(think) and not model.has("thinking"):
            raise ApiError(400, f"{go_quote(name)} does not support thinking")
        self._refusal_faults(record)
        lease = await self._acquire(model, keep_alive, body, record)
        try:
            if empty:
                record.action = "load"
                await self._send_json(ex, 200, done(name, "load"))
                return
            messages, prompt, prompt_tokens = generation()
            gen = GenerationRequest(
                endpoint=route,
                model=name,
                messages=tuple(messages),
                prompt=prompt,
                options=body.get("options") or {},
                format=body.get("format"),
                think=think,
                tools=tuple(tools),
                body=body,
            )
            await self._run(ex, record, lease, gen, stream, prompt_tokens, model)
        finally:
            self.state.scheduler.release(lease.runner)

    async def _acquire(
        self, model: EmulatedModel, keep_alive: float | None, body: Mapping[str, Any], record: RequestRecord
    ) -> Lease:
        options = body.get("options") or {}
        num_ctx = options.get("num_ctx") if isinstance(options.get("num_ctx"), int) else None
        if (
            model.key not in self.state.scheduler.runners
            or self.state.scheduler.runners[model.key].state != "ready"
        ):
            record.cold_load = True
            self.state.log.notify()
        lease = await self.state.scheduler.acquire(model, keep_alive, num_ctx)
        record.cold_load = lease.cold
        return lease

    # -- the generation itself -------------------------------------------------------------

    def _plan(self, gen: GenerationRequest, prompt: list[str], model: EmulatedModel) -> _Plan:
        settings = self.state.settings
        seed_text = f"{model.name}\x1f{gen.endpoint}\x1f{gen.prompt}"
        pieces: list[_Piece] = []
        thinking_text: str | None = None
        content: str | None = None
        calls = self.state.tools.take(gen) if gen.tools else None
        responder = self.state.responder
        if calls is None and responder is not None:
            answer = responder(gen)
            if isinstance(answer, Reply):
                content, thinking_text = answer.content, answer.thinking
            elif answer is not None:
                content = str(answer)
        if _thinks(gen.think) and model.has("thinking") and thinking_text is None:
            thinking_text = default_thinking(seed_text, settings.thinking_tokens)
        if not _thinks(gen.think):
            thinking_text = None
        if calls is None and content is None:
            if gen.format is not None and gen.format != "":
                content = format_text(gen.format, seed_text)
            else:
                content = default_reply(seed_text, settings.reply_tokens)
        options = gen.options
        done_reason = "stop"
        if content:
            content = _apply_stop(content, options.get("stop"))
        for token in split_tokens(thinking_text or ""):
            pieces.append(_Piece(thinking=token))
        if calls is not None:
            tool_calls = [self._tool_call(call, index) for index, call in enumerate(calls)]
            pieces.append(_Piece(tool_calls=tool_calls, tokens=max(1, count_tokens(dumps(calls)))))
        else:
            pieces.extend(_Piece(content=token) for token in split_tokens(content or ""))
        limit = options.get("num_predict")
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
            budget, kept = int(limit), []
            for piece in pieces:
                if budget <= 0:
                    done_reason = "length"
                    break
                kept.append(piece)
                budget -= piece.tokens
            pieces = kept
        return _Plan(pieces, done_reason, prompt)

    def _tool_call(self, call: Mapping[str, Any], index: int) -> dict[str, Any]:
        call_id = "call_" + "".join(self._ids.choice(_CALL_ID_CHARS) for _ in range(8))
        return {
            "id": call_id,
            "function": {"index": index, "name": call["name"], "arguments": call.get("arguments") or {}},
        }

    async def _run(
        self,
        ex: Exchange,
        record: RequestRecord,
        lease: Lease,
        gen: GenerationRequest,
        stream: bool,
        prompt_tokens: _PromptTokens,
        model: EmulatedModel,
    ) -> None:
        settings = self.state.settings
        scale = settings.time_scale
        runner = lease.runner
        async with self._generation_slot(record, runner) as queue_s:
            num_keep = _num_keep(gen.options)
            tokens = _fit_context(prompt_tokens(runner.context_length), runner.context_length, gen, num_keep)
            faults = self.state.faults.current
            plan = self._plan(gen, tokens, model)
            # The runner reuses the slot's longest common prefix: only the rest costs prompt time.
            slot, cached = runner.cache.take(tokens, reuse=settings.prompt_cache)
            record.cached_tokens, record.cache_slot = cached, slot.id
            kept = tokens  # what the slot holds afterwards: the prompt, plus the reply once generated
            try:
                ttft = (model.ttft if model.ttft is not None else settings.ttft) + faults.extra_latency
                prefill = settings.prompt_tokens_per_second
                ttft += (len(tokens) - cached) / prefill if prefill > 0 else 0.0
                ttft *= faults.slow_factor
                tps = (
                    model.tokens_per_second
                    if model.tokens_per_second is not None
                    else settings.tokens_per_second
                )
                per_token = faults.slow_factor / tps if tps > 0 else 0.0
                eval_count = sum(p.tokens for p in plan.pieces)
                metrics = {
                    "load_ns": lease.load_ns if lease.cold else 0,
                    "queue_ns": int(queue_s * 1e9),
                    # Ollama counts the whole prompt, cached or not (numPromptInputs; cache_n +
                    # prompt_n since 0.30): only the duration shows the cache.
                    "prompt_eval_count": len(tokens),
                    "prompt_eval_duration": max(1, int(ttft * 1e9)),
                    "eval_count": eval_count,
                    "eval_duration": max(1, int(eval_count * per_token * 1e9)) if eval_count else 0,
                }
                record.queue_duration = metrics["queue_ns"]
                if ttft > 0 and scale > 0:
                    await asyncio.sleep(ttft * scale)
                if stream:
                    await self._stream(ex, record, gen, plan, per_token * scale, faults, metrics)
                else:
                    # Not streamed: the whole reply once the last token would have been generated.
                    if per_token * scale > 0 and eval_count:
                        await asyncio.sleep(per_token * scale * eval_count)
                    if faults.hang_after_chunks is not None:
                        await self._mid_stream_fault(ex, record, 0, None, None, 0, faults)
                    _whole_reply_faults(ex, record, faults)
                    await self._send_json(ex, 200, self._final(gen, plan, record, metrics, whole=True))
                kept = tokens + tokenize(_generated_text(plan))
            finally:
                runner.cache.give_back(slot, kept, num_keep)

    @contextlib.asynccontextmanager
    async def _generation_slot(self, record: RequestRecord, runner: Runner) -> AsyncIterator[float]:
        """Hold one of ``runner``'s slots while generating; yields the modelled seconds queued for it."""
        scheduler = self.state.scheduler
        scale = self.state.settings.time_scale
        loop = asyncio.get_running_loop()
        slot_start = loop.time()
        waited = await runner.slots.acquire()
        try:
            record.concurrency, record.model_concurrency = scheduler.begin_generation(runner)
            try:
                yield (loop.time() - slot_start) / scale if waited and scale > 0 else 0.0
            finally:
                scheduler.end_generation(runner)
        finally:
            runner.slots.release()

    def _final(
        self, gen: GenerationRequest, plan: _Plan, record: RequestRecord, metrics: dict[str, int], whole: bool
    ) -> dict[str, Any]:
        """The last object (``done: true``) with every metric, in Go field order."""
        # A warm request still spends a millisecond or so in the scheduler.
        load = metrics["load_ns"] + 1_000_000 + (record.id * 104_729) % 1_500_000
        total = load + metrics["queue_ns"] + metrics["prompt_eval_duration"] + metrics["eval_duration"]
        total += 150_000 + (record.id * 7_919) % 200_000  # template rendering, sampling, HTTP
        record.load_duration = load
        record.total_duration = total
        record.prompt_eval_duration = metrics["prompt_eval_duration"]
        record.eval_duration = metrics["eval_duration"]
        record.prompt_eval_count = metrics["prompt_eval_count"]
        record.eval_count = metrics["eval_count"]
        record.done_reason = plan.done_reason
        out: dict[str, Any] = {"model": gen.model, "created_at": format_utc()}
        if gen.endpoint == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": ""}
            if whole:
                message["content"] = "".join(p.content for p in plan.pieces)
                thinking = "".join(p.thinking for p in plan.pieces if p.thinking)
                if thinking:
                    message["thinking"] = thinking
                calls = [c for p in plan.pieces if p.tool_calls for c in p.tool_calls]
                if calls:
                    message["tool_calls"] = calls
            out["message"] = message
        else:
            out["response"] = "".join(p.content for p in plan.pieces) if whole else ""
            if whole:
                thinking = "".join(p.thinking for p in plan.pieces if p.thinking)
                if thinking:
                    out["thinking"] = thinking
        out["done"] = True
        out["done_reason"] = plan.done_reason
        if gen.endpoint == "generate" and not gen.body.get("raw"):
            # Tokenize(prompt + response): sent back as ``context``, it renders the cached tokens.
            reply = tokenize("".join(p.content for p in plan.pieces))
            out["context"] = self.state.vocab.ids(plan.prompt + reply)
        out["total_duration"] = total
        out["load_duration"] = load
        for key in ("prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
            if metrics[key]:  # omitempty
                out[key] = metrics[key]
        return out

    def _chunk(self, gen: GenerationRequest, piece: _Piece) -> bytes:
        if gen.endpoint == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": piece.content}
            if piece.thinking:
                message["thinking"] = piece.thinking
            if piece.tool_calls:
                message["tool_calls"] = piece.tool_calls
            obj: dict[str, Any] = {
                "model": gen.model,
                "created_at": format_utc(),
                "message": message,
                "done": False,
            }
        else:
            obj = {"model": gen.model, "created_at": format_utc(), "response": piece.content}
            if piece.thinking:
                obj["thinking"] = piece.thinking
            obj["done"] = False
        return (dumps(obj) + "\n").encode()

    async def _stream(
        self,
        ex: Exchange,
        record: RequestRecord,
        gen: GenerationRequest,
        plan: _Plan,
        token_delay: float,
        faults: Faults,
        metrics: dict[str, int],
    ) -> None:
        pieces = plan.pieces
        # Fault triggers count lines; they fire before the done line at the latest.
        last = len(pieces)

        def trigger(value: int | None) -> int | None:
            return None if value is None else max(0, min(value, last))

        drop_at = trigger(faults.drop_after_chunks)
        error_at = trigger(faults.error_after_chunks)
        hang_at = trigger(faults.hang_after_chunks)
        loop = asyncio.get_running_loop()
        start = loop.time()
        due_tokens = 0
        buffer = bytearray()
        for index in range(last + 1):
            if index in (drop_at, error_at, hang_at):
                if buffer:
                    await self._write_stream(ex, bytes(buffer))
                    buffer.clear()
                await self._mid_stream_fault(ex, record, index, drop_at, error_at, hang_at, faults)
            if index < last:
                piece = pieces[index]
                due_tokens += piece.tokens
                if token_delay > 0:
                    # Never early: sleep until this token is due. Sleeps overshoot a little, so at
                    # fast time scales several tokens are due per wake-up and go out in one write.
                    delay = start + due_tokens * token_delay - loop.time()
                    if delay > 0:
                        if buffer:
                            await self._write_stream(ex, bytes(buffer))
                            buffer.clear()
                        await asyncio.sleep(delay)
                buffer += self._chunk(gen, piece)
            else:
                buffer += (dumps(self._final(gen, plan, record, metrics, whole=False)) + "\n").encode()
            record.chunks = index + 1
        await self._write_stream(ex, bytes(buffer))
        await ex.end()

    async def _write_stream(self, ex: Exchange, data: bytes) -> None:
        if not ex.started:
            await ex.start(200, NDJSON)
        await ex.write(data)

    async def _mid_stream_fault(
        self,
        ex: Exchange,
        record: RequestRecord,
        index: int,
        drop_at: int | None,
        error_at: int | None,
        hang_at: int | None,
        faults: Faults,
    ) -> None:
        if index == hang_at:
            record.fault = "hang_mid_stream" if index else "hang"
            self.state.log.notify()
            while self.state.faults.current.hang_after_chunks is not None:
                await self.state.faults_changed()
        if index == drop_at:
            record.fault = "drop"
            ex.drop()
        if index == error_at:
            record.fault = "error_line"
            record.error = faults.stream_error_message
            if not ex.started:
                raise ApiError(500, faults.stream_error_message)
            await ex.write((dumps({"error": faults.stream_error_message}) + "\n").encode())
            await ex.end()
            raise _StreamEnded()

    # -- embeddings ------------------------------------------------------------------------

    async def _embed(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        body = self._body(request, record, "EmbedRequest", _EMBED_FIELDS)
        _stream, keep_alive = self._common(body, record)
        record.stream = None
        await self._hang_fault(record)
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list):
            if not all(isinstance(item, str) for item in raw):
                raise ApiError(400, "invalid input type")
            inputs = list(raw)
        elif raw is None:
            inputs = []
        else:
            raise ApiError(400, "invalid input type")
        name = body.get("model") or ""
        model = self._find(name, "embed")
        record.model_name = model.name
        self._refusal_faults(record)
        lease = await self._acquire(model, keep_alive, body, record)
        try:
            if not inputs:
                record.action = "load"
                await self._send_json(ex, 200, {"model": name, "embeddings": []})
                return
            truncate = body.get("truncate") is not False
            vectors, metrics = await self._embed_vectors(record, lease, model, inputs, truncate)
            dims = body.get("dimensions")
            if isinstance(dims, int) and 0 < dims < len(vectors[0]):
                vectors = [normalize(v[:dims]) for v in vectors]
            _whole_reply_faults(ex, record, self.state.faults.current)
            load = metrics["load_ns"] + 1_000_000 + (record.id * 104_729) % 1_500_000
            total = load + metrics["queue_ns"] + metrics["prompt_eval_duration"] + 120_000
            record.load_duration, record.total_duration = load, total
            record.prompt_eval_count = metrics["prompt_eval_count"]
            record.prompt_eval_duration = metrics["prompt_eval_duration"]
            embeddings = ",".join("[" + ",".join(f"{x:.9g}" for x in v) + "]" for v in vectors)
            text = (
                f'{{"model":{dumps(name)},"embeddings":[{embeddings}],"total_duration":{total},'
                f'"load_duration":{load},"prompt_eval_count":{metrics["prompt_eval_count"]}}}'
            )
            await ex.send(200, JSON, text.encode())
        finally:
            self.state.scheduler.release(lease.runner)

    async def _embed_vectors(
        self, record: RequestRecord, lease: Lease, model: EmulatedModel, inputs: list[str], truncate: bool
    ) -> tuple[list[list[float]], dict[str, int]]:
        settings = self.state.settings
        runner = lease.runner
        async with self._generation_slot(record, runner) as queue_s:
            limit = runner.context_length
            counts = [max(1, count_tokens(text)) for text in inputs]
            if not truncate and any(c > limit for c in counts):
                raise ApiError(400, "the input length exceeds the context length")
            tokens = sum(min(c, limit) for c in counts)
            faults = self.state.faults.current
            prefill = settings.prompt_tokens_per_second
            seconds = (model.ttft if model.ttft is not None else settings.ttft) + faults.extra_latency
            seconds = (seconds + (tokens / prefill if prefill > 0 else 0.0)) * faults.slow_factor
            if seconds > 0 and settings.time_scale > 0:
                await asyncio.sleep(seconds * settings.time_scale)
            dim = model.embedding_dim or 768
            vectors = [list(embed_text(text, dim)) for text in inputs]
            # The runner embeds without reusing a cache (LoadCacheSlot(inputs, false)); the slot
            # it took then holds the embedded text.
            slot, _ = runner.cache.take((), reuse=False)
            runner.cache.give_back(slot, tokenize(inputs[-1])[:limit])
            record.cached_tokens, record.cache_slot = 0, slot.id
            record.queue_duration = int(queue_s * 1e9)
            return vectors, {
                "load_ns": lease.load_ns if lease.cold else 0,
                "queue_ns": int(queue_s * 1e9),
                "prompt_eval_count": tokens,
                "prompt_eval_duration": int(seconds * 1e9),
            }

    async def _embeddings(self, request: HttpRequest, ex: Exchange, record: RequestRecord) -> None:
        body = self._body(request, record, "EmbeddingRequest", _EMBEDDINGS_FIELDS)
        _stream, keep_alive = self._common(body, record)
        record.stream = None
        await self._hang_fault(record)
        name = body.get("model") or ""
        if not _valid_name(name):
            raise ApiError(400, "model is required")
        model = resolve(
            self.state.models, name, fold_case=folds_case("embeddings", self.state.settings.version)
        )
        if model is None:  # the scheduler's (older) wording: this route does not look up first
            raise ApiError(404, f"model {go_quote(name)} not found, try pulling it first")
        record.model_name = model.name
        self._refusal_faults(record)
        lease = await self._acquire(model, keep_alive, body, record)
        try:
            prompt = body.get("prompt") or ""
            if not prompt:
                record.action = "load"
                await self._send_json(ex, 200, {"embedding": []})
                return
            vectors, metrics = await self._embed_vectors(record, lease, model, [prompt], True)
            record.prompt_eval_count = metrics["prompt_eval_count"]
            await self._send_json(ex, 200, {"embedding": vectors[0]})
        finally:
            self.state.scheduler.release(lease.runner)


def _num_keep(options: Mapping[str, Any]) -> int:
    value = options.get("num_keep")
    return value if isinstance(value, int) and not isinstance(value, bool) else DEFAULT_NUM_KEEP


def _fit_context(tokens: list[str], num_ctx: int, gen: GenerationRequest, num_keep: int) -> list[str]:
    """The runner's ``NewSequence``: a prompt over ``num_ctx`` is cut, or refused without ``truncate``."""
    if len(tokens) <= num_ctx:
        return tokens
    if gen.body.get("truncate") is False:
        raise ApiError(400, "the input length exceeds the context length")
    return truncate_tokens(tokens, num_ctx, num_keep)


def _generated_text(plan: _Plan) -> str:
    """What the model generated, as the runner's cache holds it (thinking first, in its tags)."""
    thinking = "".join(p.thinking for p in plan.pieces if p.thinking)
    content = "".join(p.content for p in plan.pieces)
    calls = [c for p in plan.pieces if p.tool_calls for c in p.tool_calls]
    body = render_assistant(content, calls)
    return f"<think>\n{thinking}\n</think>\n\n{body}" if thinking else body


def _whole_reply_faults(ex: Exchange, record: RequestRecord, faults: Faults) -> None:
    """``drop_after_chunks`` / ``error_after_chunks`` on a reply sent in one piece: it never arrives."""
    if faults.drop_after_chunks is not None:
        record.fault = "drop"
        ex.drop()
    if faults.error_after_chunks is not None:
        record.fault = "error_line"
        raise ApiError(500, faults.stream_error_message)


def _check_top_logprobs(body: Mapping[str, Any]) -> None:
    value = body.get("top_logprobs")
    if isinstance(value, int) and not 0 <= value <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")


def _chat_done(model: str, reason: str) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": format_utc(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": reason,
    }


def _generate_done(model: str, reason: str) -> dict[str, Any]:
    return {"model": model, "created_at": format_utc(), "response": "", "done": True, "done_reason": reason}


def _apply_stop(text: str, stop: Any) -> str:
    """Cut the text before the first stop sequence (the sequence itself is not emitted)."""
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list):
        return text
    cut = len(text)
    for sequence in stop:
        if isinstance(sequence, str) and sequence:
            at = text.find(sequence)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]
