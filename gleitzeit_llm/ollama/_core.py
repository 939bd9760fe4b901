"""What the async and sync transports share: request building, timeouts by phase, status
classification and response parsing, and the public face of a transport (:class:`TransportBase`).
Only the I/O lives in ``_async/transport.py`` (and its generated twin ``_sync/transport.py``)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from gleitzeit_llm._version import __version__
from gleitzeit_llm.errors import (
    ConfigError,
    InstanceFailedError,
    InstanceTimeoutError,
    RequestError,
    StreamInterruptedError,
)
from gleitzeit_llm.ollama._classify import (
    describe_instance,
    error_for_exception,
    error_for_status,
    not_ollama,
    ollama_error_text,
)
from gleitzeit_llm.ollama.models import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    fold_wire_chunks,
)
from gleitzeit_llm.ollama.net import AsyncDeadlineStream, DeadlineStream
from gleitzeit_llm.ollama.timeouts import Timeouts
from gleitzeit_llm.ollama.urls import parse_instance_url

M = TypeVar("M", bound=BaseModel)

_JSON_BODY_HEADERS = {"Content-Type": "application/json"}
KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)
_MIN_WAIT = 0.001  # seconds: the shortest wait a capped timeout is given
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
DEFAULT_MAX_CONNECTIONS = 100
OnFirst = Callable[[], object] | None  # called when a collected answer's first chunk arrives


class Endpoint(NamedTuple):
    """A generation endpoint: all that tells ``chat`` from ``generate`` in a transport."""

    path: str
    request: type[ChatRequest] | type[GenerateRequest]
    response: type[ChatResponse] | type[GenerateResponse]


CHAT = Endpoint("/api/chat", ChatRequest, ChatResponse)
GENERATE = Endpoint("/api/generate", GenerateRequest, GenerateResponse)


def _set_stream_deadline(response: httpx.Response, deadline: float | None) -> None:
    stream = response.extensions.get("network_stream")
    if isinstance(stream, (DeadlineStream, AsyncDeadlineStream)):
        stream.deadline = deadline


class Call:
    """One request in flight: what it is (for messages) and its timeouts and deadline."""

    __slots__ = ("deadline", "method", "model", "path", "timeouts")

    def __init__(self, method: str, path: str, model: str | None, timeouts: Timeouts) -> None:
        self.method = method
        self.path = path
        self.model = model
        self.timeouts = timeouts
        self.deadline = None if timeouts.total is None else time.monotonic() + timeouts.total

    def capped(self, seconds: float | None) -> float | None:
        """``seconds`` capped by what is left of the total timeout."""
        if self.deadline is None:
            return seconds
        # Never 0: a socket with timeout 0 is non-blocking and fails with an I/O error instead
        # of a timeout.
        remaining = max(self.deadline - time.monotonic(), _MIN_WAIT)
        return remaining if seconds is None else min(seconds, remaining)

    def expired(self) -> bool:
        # A timer that fired within a millisecond of the deadline was the deadline's.
        return self.deadline is not None and time.monotonic() >= self.deadline - _MIN_WAIT

    def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook, set when a total timeout is: caps the connect and the wait for
        headers by what is left when they start (not when the request was built: waiting for a
        pooled connection or connecting may have used some of it)."""
        if name == "connection.connect_tcp.started" or name == "connection.start_tls.started":
            info["timeout"] = self.capped(info.get("timeout"))
        elif name == "http11.receive_response_headers.started":
            timeout = info["request"].extensions.get("timeout")
            if isinstance(timeout, dict):
                timeout["read"] = self.capped(self.timeouts.first_byte)

    async def atrace(self, name: str, info: dict[str, Any]) -> None:
        """Async twin of :meth:`trace` (httpcore's async pool wants a coroutine)."""
        self.trace(name, info)


class TransportCore:
    """The per-instance logic of a transport, independent of sync or async I/O."""

    __slots__ = ("default_timeouts", "headers", "instance", "label", "url")

    def __init__(
        self,
        url: str,
        *,
        instance_id: str | None,
        timeouts: Timeouts,
        headers: dict[str, str] | None,
    ) -> None:
        if not isinstance(timeouts, Timeouts):
            raise ConfigError(
                f"timeouts must be a Timeouts, got {type(timeouts).__name__}",
                field="timeouts",
                hint="Timeouts(connect=5.0, first_byte=300.0, idle=120.0)",
            )
        base, username, password = parse_instance_url(url)
        self.url = base
        self.instance = instance_id or urlsplit(base).netloc
        self.label = describe_instance(self.instance, self.url)
        self.default_timeouts = timeouts
        merged = {
            "Accept": "application/json, application/x-ndjson",
            "User-Agent": f"gleitzeit-llm/{__version__}",
        }
        if username is not None or password is not None:
            token = base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode("ascii")
            merged["Authorization"] = f"Basic {token}"
        for key, value in (headers or {}).items():
            for existing in [k for k in merged if k.lower() == key.lower()]:
                del merged[existing]
            merged[key] = value
        self.headers = merged

    def client_options(
        self, *, max_connections: int, verify: Any, transport: Any, make_transport: Any
    ) -> dict[str, Any]:
        """httpx client arguments; without a ``transport``, ``make_transport(url, verify, limits)``
        builds the connection pool (see :mod:`gleitzeit_llm.ollama.net`)."""
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(
                f"max_connections must be a positive integer, got {max_connections!r}",
                field="max_connections",
                value=max_connections,
            )
        t = self.default_timeouts
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            # httpcore scans its whole pool on every request (quadratic in idle connections,
            # plus one poll() per idle one): after a burst of 64 calls, 64 idle connections
            # kept for 30 s made each later call ~5 ms slower. Reconnecting after 5 s idle
            # costs one handshake.
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )
        if transport is None:
            transport = make_transport(self.url, verify, limits)
        return {
            "base_url": self.url,
            "headers": self.headers,
            "timeout": httpx.Timeout(
                connect=t.connect, read=t.first_byte, write=t.first_byte, pool=t.first_byte
            ),
            "limits": limits,
            # Only used by httpx for proxies from the environment; our pool has its context.
            "verify": verify,
            "transport": transport,
            "follow_redirects": False,
        }

    # -- requests ------------------------------------------------------------------------------

    def start(self, method: str, path: str, model: str | None, timeouts: Timeouts | None) -> Call:
        return Call(method, path, model, self.default_timeouts if timeouts is None else timeouts)

    def build(
        self, client: httpx.Client | httpx.AsyncClient, call: Call, body: dict[str, Any] | None
    ) -> httpx.Request:
        t = call.timeouts
        first_byte = call.capped(t.first_byte)
        # httpcore reads this dict when it waits for headers and again when the body starts, so
        # enter_body() can switch "read" from the first-byte to the idle timeout in between.
        extensions: dict[str, Any] = {
            "timeout": {
                "connect": call.capped(t.connect),
                "read": first_byte,
                "write": first_byte,
                "pool": first_byte,
            }
        }
        if call.deadline is not None:
            extensions["trace"] = call.atrace if isinstance(client, httpx.AsyncClient) else call.trace
        if body is None:
            return client.build_request(call.method, call.path, extensions=extensions)
        try:
            content = _dumps(body).encode("utf-8")
        except (TypeError, ValueError) as exc:  # NaN, or an object JSON cannot carry
            raise RequestError(f"the request cannot be sent as JSON: {exc}", field="request") from None
        return client.build_request(
            call.method, call.path, content=content, headers=_JSON_BODY_HEADERS, extensions=extensions
        )

    def enter_body(self, response: httpx.Response, call: Call) -> None:
        """Headers arrived: from now on the read timeout is the longest gap between chunks."""
        timeout = response.request.extensions.get("timeout")
        if isinstance(timeout, dict):
            timeout["read"] = call.capped(call.timeouts.idle)
        if call.deadline is not None:
            # httpcore takes the read timeout once per body: the connection's stream caps
            # each read by the deadline instead (until leave_body()).
            _set_stream_deadline(response, call.deadline)

    def leave_body(self, response: httpx.Response, call: Call) -> None:
        """The response is done with: its connection serves the next request without our deadline."""
        if call.deadline is not None:
            _set_stream_deadline(response, None)

    # -- errors --------------------------------------------------------------------------------

    def send_error(self, exc: httpx.HTTPError, call: Call) -> Exception:
        """The error for a failure before the response headers arrived."""
        return self.body_error(exc, call, None, 0)

    def body_error(
        self, exc: httpx.HTTPError, call: Call, response: httpx.Response | None, chunks: int
    ) -> Exception:
        """The error for a failure while reading the body of ``response`` (None: before it)."""
        return error_for_exception(
            exc,
            instance=self.instance,
            url=self.url,
            in_body=response is not None,
            timeouts=call.timeouts,
            total_expired=call.expired(),
            chunks_received=chunks,
            status=None if response is None else response.status_code,
        )

    def status_error(self, response: httpx.Response, body: bytes, call: Call) -> Exception:
        return error_for_status(
            response,
            body,
            instance=self.instance,
            url=self.url,
            method=call.method,
            path=call.path,
            model=call.model,
        )

    def check_deadline(self, call: Call, chunks: int) -> None:
        if call.expired():
            raise InstanceTimeoutError(
                f"{self.label}: total timeout of {call.timeouts.total:g}s exceeded after {chunks} chunks",
                phase="total",
                instance=self.instance,
                url=self.url,
                status=200,
            )

    def not_a_stream(self, response: httpx.Response) -> bool:
        """A status or content type after which the body is an error, not NDJSON chunks."""
        if response.status_code != 200:
            return True
        return response.headers.get("content-type", "").startswith("text/html")

    def stream_error(self, response: httpx.Response, body: bytes, call: Call) -> Exception:
        if response.status_code != 200:
            return self.status_error(response, body, call)
        return self._not_ollama(response, body, call, "expected an NDJSON stream")

    # -- responses -----------------------------------------------------------------------------

    def parse(self, response: httpx.Response, body: bytes, model: type[M], call: Call) -> M:
        """Validate a complete JSON body into ``model`` in one pass (no separate json.loads)."""
        if not 200 <= response.status_code < 300:
            raise self.status_error(response, body, call)
        try:
            result = model.model_validate_json(body)
        except ValidationError as exc:
            ollama_message, _ = ollama_error_text(body)
            if ollama_message is not None:
                raise self._error_in_200(response, ollama_message) from None
            first = exc.errors(include_url=False)[0]
            if first["type"] == "json_invalid":
                reason = "not JSON"
            else:
                where = ".".join(str(p) for p in first["loc"]) or "body"
                reason = f"not a {call.path} response ({where}: {first['msg']})"
            raise self._not_ollama(response, body, call, reason) from None
        extra = result.__pydantic_extra__
        if extra and "error" in extra:
            raise self._error_in_200(response, str(extra["error"]))
        return result

    def parse_raw(self, response: httpx.Response, body: bytes, call: Call) -> dict[str, Any]:
        """A complete JSON object body as a dict (the gateway's pass-through: nothing dropped)."""
        if not 200 <= response.status_code < 300:
            raise self.status_error(response, body, call)
        try:
            result = json.loads(body)
        except ValueError:
            raise self._not_ollama(response, body, call, "not JSON") from None
        if not isinstance(result, dict):
            raise self._not_ollama(response, body, call, f"not a {call.path} response (not an object)")
        if "error" in result:
            raise self._error_in_200(response, str(result["error"]))
        return result

    def chunk(self, model: type[M], obj: dict[str, Any], chunks: int, call: Call) -> M:
        try:
            return model.__pydantic_validator__.validate_python(obj)  # type: ignore[no-any-return]
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "chunk"
            raise StreamInterruptedError(
                f"{self.label}: chunk {chunks + 1} of {call.path} is not an Ollama chunk "
                f"({where}: {first['msg']}); this does not look like Ollama",
                chunks_received=chunks,
                instance=self.instance,
                url=self.url,
                status=200,
            ) from None

    def fold(self, model: type[M], chunks: list[dict[str, Any]], call: Call) -> M:
        """A streamed answer folded into one (see :func:`fold_wire_chunks`) and validated once."""
        # Never empty: the decoder raises for a body that ended without its 'done' chunk.
        try:
            folded = fold_wire_chunks(chunks, chat=call.path == "/api/chat")
        except (AttributeError, TypeError):
            for index, chunk in enumerate(chunks):  # a chunk of the wrong shape: name it
                self.chunk(model, chunk, index, call)
            raise
        return self.chunk(model, folded, len(chunks) - 1, call)

    def ping_result(self, response: httpx.Response, body: bytes, call: Call) -> bool:
        if not 200 <= response.status_code < 300:
            raise self.status_error(response, body, call)
        if b"Ollama" not in body:
            raise self._not_ollama(response, body, call, "expected 'Ollama is running'")
        return True

    def _error_in_200(self, response: httpx.Response, message: str) -> InstanceFailedError:
        return InstanceFailedError(
            f"{self.label}: {message} (HTTP {response.status_code})",
            instance=self.instance,
            url=self.url,
            status=response.status_code,
            ollama_message=message,
        )

    def _not_ollama(
        self, response: httpx.Response, body: bytes, call: Call, reason: str
    ) -> InstanceFailedError:
        return not_ollama(
            response, body, reason, instance=self.instance, url=self.url, method=call.method, path=call.path
        )


class TransportBase:
    """The public face both transports share; ``_async/transport.py`` adds the I/O."""

    _core: TransportCore

    def _init_core(
        self, url: str, instance_id: str | None, timeouts: Timeouts, headers: Mapping[str, str] | None
    ) -> None:
        self._core = TransportCore(
            url, instance_id=instance_id, timeouts=timeouts, headers=dict(headers) if headers else None
        )

    @property
    def instance_id(self) -> str:
        """The instance's id (by default ``host:port``)."""
        return self._core.instance

    @property
    def url(self) -> str:
        """The base URL, without credentials."""
        return self._core.url

    @property
    def timeouts(self) -> Timeouts:
        return self._core.default_timeouts

    def __repr__(self) -> str:
        return f"{type(self).__name__}(instance_id={self._core.instance!r}, url={self._core.url!r})"
