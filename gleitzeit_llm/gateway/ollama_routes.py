"""Ollama's own API over the pool: generation and model info routed like library calls, the
model lists as the union of every instance's."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gleitzeit_llm.gateway.context import Gateway
from gleitzeit_llm.gateway.fanout import each_instance
from gleitzeit_llm.gateway.relay import NATIVE, Relay
from gleitzeit_llm.hints import RoutingHints

__all__ = ["routes"]

#: The field of each list entry that names the instances holding it (Ollama's clients ignore
#: fields they do not know).
WHERE = "gleitzeit_instances"


def routes(gateway: Gateway) -> list[Route]:
    """The Ollama routes of ``gateway``."""

    async def generation(request: Request) -> Relay:
        kind = "chat" if request.url.path == "/api/chat" else "generate"
        body, hints = await gateway.read(request)
        client_stream = body.get("stream", True) is not False
        body["stream"] = True  # always streamed upstream: first-token timing, per-chunk idle timeouts
        return Relay(
            gateway.provider, request.url.path, body, hints, NATIVE[kind], client_stream=client_stream
        )

    async def one_answer(request: Request) -> Relay:
        body, hints = await gateway.read(request)
        return Relay(
            gateway.provider, request.url.path, body, hints, NATIVE["generate"], upstream_stream=False
        )

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": await union(gateway, request, "/api/tags")})

    async def ps(request: Request) -> Response:
        return JSONResponse({"models": await union(gateway, request, "/api/ps")})

    async def version(request: Request) -> Response:
        hints = gateway.hints(request)
        answers = await each_instance(
            gateway.provider, gateway.targets(hints), lambda t: t.request_raw("GET", "/api/version", None)
        )
        found = [
            a["version"] for _, a in answers if isinstance(a, dict) and isinstance(a.get("version"), str)
        ]
        # The oldest instance's: a client that checks for a feature must find it on every instance.
        return JSONResponse({"version": min(found, key=_version_key) if found else "0.0.0"})

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    return [
        Route("/api/chat", generation, methods=["POST"]),
        Route("/api/generate", generation, methods=["POST"]),
        Route("/api/embed", one_answer, methods=["POST"]),
        Route("/api/embeddings", one_answer, methods=["POST"]),
        Route("/api/show", one_answer, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET", "HEAD"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/version", version, methods=["GET", "HEAD"]),
        Route("/", root, methods=["GET", "HEAD"]),
    ]


async def union(gateway: Gateway, request: Request, path: str) -> list[dict[str, Any]]:
    """Every instance's list, one entry per model; each entry lists where it lives (``WHERE``)."""
    hints: RoutingHints = gateway.hints(request)
    answers = await each_instance(
        gateway.provider, gateway.targets(hints), lambda t: t.request_raw("GET", path, None)
    )
    merged: dict[str, dict[str, Any]] = {}
    for instance_id, answer in answers:
        if not isinstance(answer, dict):
            continue  # an instance that did not answer lists nothing
        for entry in answer.get("models") or ():
            if not isinstance(entry, dict):
                continue
            name = entry.get("model") or entry.get("name")
            kept = merged.setdefault(name, {**entry, WHERE: []})
            kept[WHERE].append(instance_id)
    return list(merged.values())


def _version_key(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("-")[0].split("."):
        parts.append(int(part) if part.isdigit() else 0)
    return tuple(parts)
