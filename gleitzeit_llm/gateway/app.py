"""The gateway's ASGI app: Ollama's API (and OpenAI's) over one :class:`OllamaPoolProvider`.

from gleitzeit_llm.gateway import create_app
app = create_app(config="pool.yaml", settings=GatewaySettings(api_keys=("k",)))
# uvicorn.run(app, host="127.0.0.1", port=11435)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.errors import RequestError
from gleitzeit_llm.gateway import admin, ollama_routes, openai_routes, ops
from gleitzeit_llm.gateway.auth import OPEN_PATHS, authorized
from gleitzeit_llm.gateway.context import Gateway
from gleitzeit_llm.gateway.errors import GatewayError
from gleitzeit_llm.gateway.headers import ATTEMPTS, INSTANCE
from gleitzeit_llm.gateway.relay import json_bytes
from gleitzeit_llm.gateway.settings import GatewaySettings
from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["create_app"]

_DEFAULT_HEADERS = ((INSTANCE.lower().encode(), b"-"), (ATTEMPTS.lower().encode(), b"0"))


def create_app(
    provider: OllamaPoolProvider | None = None,
    *,
    config: PoolConfig | Mapping[str, Any] | str | None = None,
    settings: GatewaySettings | None = None,
) -> Starlette:
    """The gateway over ``provider`` (not closed by the app: the caller owns it), or over a pool
    built from ``config`` (opened and closed with the app's lifespan)."""
    owned = provider is None
    if provider is None:
        provider = (
            OllamaPoolProvider(config=config)
            if config is not None
            else OllamaPoolProvider(config=PoolConfig.from_env())
        )
    gateway = Gateway(provider, settings or GatewaySettings())
    metrics = ops.GatewayMetrics(provider)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await provider.initialize()
        try:
            yield
        finally:
            metrics.close()
            if owned:
                await provider.close()

    app = Starlette(
        routes=[
            *ollama_routes.routes(gateway),
            *openai_routes.routes(gateway),
            *admin.routes(gateway),
            *ops.routes(gateway, metrics),
        ],
        exception_handlers={GatewayError: _gateway_error, RequestError: _request_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(_Front, gateway=gateway, metrics=metrics)
    return app


def _error_json(path: str, status: int, message: str, param: str | None = None) -> Any:
    # /v1 answers in OpenAI's error shape, everything else in Ollama's.
    if path.startswith("/v1/"):
        return openai_routes.openai_error(status, message, param)
    return {"error": message}


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return JSONResponse(
        _error_json(request.url.path, exc.status, exc.message), exc.status, headers=exc.headers
    )


async def _request_error(request: Request, exc: Exception) -> Response:
    # A bad hint header, or an OpenAI body the translation refuses (its param named).
    assert isinstance(exc, RequestError)
    message = getattr(exc, "message", None) or str(exc)
    status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 500 else 400
    return JSONResponse(_error_json(request.url.path, status, message, exc.field), status)


class _Front:
    """Before every route: the key check; after: the default pool headers and the metrics."""

    def __init__(self, app: ASGIApp, gateway: Gateway, metrics: ops.GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.keys = tuple(key.encode() for key in gateway.settings.api_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        status = 500
        if (
            self.keys
            and path not in OPEN_PATHS
            and not authorized(_header(scope, b"authorization"), self.keys)
        ):
            status = 401
            await _unauthorized(send, path)
            self.metrics.observe(path, scope["method"], status, started)
            return

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                names = {name for name, _ in message["headers"]}
                missing = [pair for pair in _DEFAULT_HEADERS if pair[0] not in names]
                if missing:
                    message["headers"] = [*message["headers"], *missing]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.metrics.observe(path, scope["method"], status, started)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def _unauthorized(send: Send, path: str) -> None:
    message = "unauthorized: send 'Authorization: Bearer <key>' with a key of this gateway"
    body = json_bytes(_error_json(path, 401, message))
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="gleitzeit-llm"'),
                *_DEFAULT_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
