"""Model management: refused unless ``--allow-admin``; then ``pull``, ``delete`` and ``copy`` go to
every instance (or those ``X-Gleitzeit-Tags`` selects), a pull's progress streams merged into one.

``create`` and ``push`` stay refused: one model built or pushed from many servers at once has no
single meaning; run them against an instance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gleitzeit_llm.gateway.errors import GatewayError
from gleitzeit_llm.gateway.fanout import each_instance
from gleitzeit_llm.gateway.relay import json_bytes
from gleitzeit_llm.ollama import redact_url

if TYPE_CHECKING:
    from gleitzeit_llm.gateway.context import Gateway
    from gleitzeit_llm.ollama import AsyncOllamaTransport
    from gleitzeit_llm.routing.instance import OllamaInstance

__all__ = ["routes"]

ADMIN_ROUTES = {
    "/api/pull": "POST",
    "/api/delete": "DELETE",
    "/api/copy": "POST",
    "/api/create": "POST",
    "/api/push": "POST",
}
#: The field each merged line and each answer uses to say which instance it is about.
WHERE = "gleitzeit_instance"
# A pull downloads gigabytes: no read timeout, only the connect one.
_PULL_TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=60.0)


def routes(gateway: Gateway) -> list[Route]:
    async def refused(request: Request) -> Response:
        raise GatewayError(
            403,
            f"{request.url.path} is disabled on this gateway: model management changes every instance "
            "of the pool; start the gateway with --allow-admin to allow it",
        )

    async def not_fanned_out(request: Request) -> Response:
        raise GatewayError(
            501,
            f"{request.url.path} is not supported through the gateway (one model made or pushed from "
            "many servers has no single meaning); run it against one instance",
        )

    async def pull(request: Request) -> Response:
        body, targets = await _admin_request(gateway, request)
        if body.get("stream") is False:
            answers = await each_instance(gateway.provider, targets, lambda t: _pull_whole(t, body))
            failed = _failures(answers)
            await _relearn(gateway)
            if failed:
                raise GatewayError(502, f"pull failed on {failed}")
            return JSONResponse({"status": "success", "gleitzeit_instances": [i for i, _ in answers]})
        return StreamingResponse(_merged_pulls(gateway, targets, body), media_type="application/x-ndjson")

    async def delete(request: Request) -> Response:
        return await _everywhere(gateway, request, "DELETE", "/api/delete")

    async def copy(request: Request) -> Response:
        return await _everywhere(gateway, request, "POST", "/api/copy", model_field="source")

    if not gateway.settings.allow_admin:
        return [Route(path, refused, methods=[method]) for path, method in ADMIN_ROUTES.items()]
    return [
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/delete", delete, methods=["DELETE"]),
        Route("/api/copy", copy, methods=["POST"]),
        Route("/api/create", not_fanned_out, methods=["POST"]),
        Route("/api/push", not_fanned_out, methods=["POST"]),
    ]


async def _admin_request(
    gateway: Gateway, request: Request, model_field: str = "model"
) -> tuple[dict[str, Any], list[OllamaInstance]]:
    body, hints = await gateway.read(request, model_field=model_field)
    targets = gateway.targets(hints)
    if not targets:
        raise GatewayError(404, "no instance of the pool has the tags X-Gleitzeit-Tags asks for")
    return body, targets


async def _relearn(gateway: Gateway) -> None:
    # The pool routes by what each instance has installed: probe now, so a model just pulled is
    # served (and one just deleted avoided) from the next request on, not the next health round.
    await gateway.provider.manager.acheck_health_now()


def _http(transport: AsyncOllamaTransport) -> httpx.AsyncClient:
    # The instance's own client (its URL, credentials, TLS and connection pool): model management
    # answers are not the inference shapes the transport's typed methods parse.
    return transport._client


async def _pull_whole(transport: AsyncOllamaTransport, body: dict[str, Any]) -> dict[str, Any]:
    response = await _http(transport).post("/api/pull", json={**body, "stream": False}, timeout=_PULL_TIMEOUT)
    return _checked(response)


def _checked(response: httpx.Response) -> dict[str, Any]:
    data = response.json() if response.content else {}
    if response.status_code != 200 or (isinstance(data, dict) and "error" in data):
        message = data.get("error") if isinstance(data, dict) else None
        raise _InstanceAnswer(response.status_code, str(message or response.text[:200]))
    return data if isinstance(data, dict) else {}


class _InstanceAnswer(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _failures(answers: list[tuple[str, Any]]) -> str:
    return "; ".join(f"{i}: {redact_url(str(a))}" for i, a in answers if isinstance(a, Exception))


async def _merged_pulls(
    gateway: Gateway, targets: list[OllamaInstance], body: dict[str, Any]
) -> AsyncIterator[bytes]:
    """Every instance's progress lines as they come, each with ``gleitzeit_instance``; an
    instance's own ``success`` is reported as such, and one ``success`` (or an ``error``) ends it."""
    queue: asyncio.Queue[tuple[str, dict[str, Any] | None, BaseException | None]] = asyncio.Queue()

    async def one(inst: OllamaInstance) -> None:
        try:
            transport = await gateway.provider._connections.loop_transport(inst)
            request = {**body, "stream": True}
            async with _http(transport).stream(
                "POST", "/api/pull", json=request, timeout=_PULL_TIMEOUT
            ) as answer:
                if answer.status_code != 200:
                    await answer.aread()
                    _checked(answer)
                async for line in answer.aiter_lines():
                    if line.strip():
                        await queue.put((inst.id, json.loads(line), None))
            await queue.put((inst.id, None, None))
        except Exception as exc:
            await queue.put((inst.id, None, exc))

    tasks = [asyncio.ensure_future(one(inst)) for inst in targets]
    failed: list[str] = []
    try:
        for _ in range(len(tasks)):
            while True:
                instance, line, error = await queue.get()
                if line is None:
                    break
                if "error" in line:
                    failed.append(f"{instance}: {line['error']}")
                    continue
                if line.get("status") == "success":
                    line = {**line, "status": f"success on {instance}"}
                yield json_bytes({**line, WHERE: instance}) + b"\n"
            if error is not None:
                failed.append(f"{instance}: {redact_url(str(error))}")
        await _relearn(gateway)
        final: dict[str, Any] = (
            {"error": f"pull failed on {'; '.join(failed)}"} if failed else {"status": "success"}
        )
        yield json_bytes(final) + b"\n"
    finally:
        for task in tasks:  # the client left: stop pulling nowhere
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _everywhere(
    gateway: Gateway, request: Request, method: str, path: str, model_field: str = "model"
) -> Response:
    """``method path`` with the body on every target: 200 when it succeeded on at least one
    (``gleitzeit_instances`` lists where), Ollama's 404 when no instance had the model."""
    body, targets = await _admin_request(gateway, request, model_field)

    async def send(transport: AsyncOllamaTransport) -> dict[str, Any]:
        return _checked(await _http(transport).request(method, path, json=body))

    answers = await each_instance(gateway.provider, targets, send)
    await _relearn(gateway)
    done = [i for i, a in answers if not isinstance(a, Exception)]
    missing = [i for i, a in answers if isinstance(a, _InstanceAnswer) and a.status == 404]
    broken = [(i, a) for i, a in answers if isinstance(a, Exception) and i not in missing]
    if broken:
        raise GatewayError(502, f"{path} failed on {_failures(broken)}")
    if not done:
        raise GatewayError(404, f"model '{body[model_field]}' not found")
    return JSONResponse({"gleitzeit_instances": done})
