"""OpenAI's API (``/v1``) over the pool: each request translated to Ollama's native one
(:mod:`~gleitzeit_llm.gateway.openai_format`) and routed exactly like the native routes."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gleitzeit_llm.gateway import openai_format as oa
from gleitzeit_llm.gateway.body import read_json
from gleitzeit_llm.gateway.context import Gateway
from gleitzeit_llm.gateway.ollama_routes import union
from gleitzeit_llm.gateway.relay import Relay, Shape, native_whole

__all__ = ["openai_error", "routes"]


def openai_error(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape for a status and message."""
    return oa.error_body(message, oa.error_type(status), param)


def _shape(stream: Any, whole: Any) -> Shape:
    return Shape(
        media_type="text/event-stream",
        chunk=stream.feed,  # ends with data: [DONE] after the done chunk
        whole=whole,
        error_body=openai_error,
        stream_error=oa.sse_error,
    )


def routes(gateway: Gateway) -> list[Route]:
    """The ``/v1`` routes of ``gateway``."""

    async def generation(request: Request) -> Relay:
        chat = request.url.path == "/v1/chat/completions"
        hints = gateway.hints(request)
        body = await read_json(request, gateway.settings.max_body)
        model, native = (oa.chat_request if chat else oa.completion_request)(body)
        rid, created = oa.new_id("chatcmpl" if chat else "cmpl"), int(time.time())
        client_stream = bool(native.get("stream"))
        native["stream"] = True  # always streamed upstream, as on the native routes
        usage = oa.include_usage(body)
        if chat:
            stream: Any = oa.ChatStream(model, rid, created, include_usage=usage)
            answer: Any = oa.chat_response
        else:
            stream = oa.CompletionStream(model, rid, created, include_usage=usage)
            answer = oa.completion_response

        def whole(chunks: list[dict[str, Any]]) -> dict[str, Any]:
            return answer(native_whole(chunks, chat=chat), model, rid, created)  # type: ignore[no-any-return]

        path = "/api/chat" if chat else "/api/generate"
        return Relay(
            gateway.provider, path, native, hints, _shape(stream, whole), client_stream=client_stream
        )

    async def embeddings(request: Request) -> Relay:
        hints = gateway.hints(request)
        body = await read_json(request, gateway.settings.max_body)
        model, native = oa.embeddings_request(body)
        encoding = body.get("encoding_format")
        shape = Shape(
            media_type="application/json",
            chunk=lambda chunk: None,  # never streamed
            whole=lambda chunks: oa.embeddings_response(chunks[0], model, encoding),
            error_body=openai_error,
            stream_error=oa.sse_error,
        )
        return Relay(gateway.provider, "/api/embed", native, hints, shape, upstream_stream=False)

    async def models(request: Request) -> Response:
        return JSONResponse(oa.models_list(await union(gateway, request, "/api/tags")))

    return [
        Route("/v1/chat/completions", generation, methods=["POST"]),
        Route("/v1/completions", generation, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]
