"""Model management (pull, delete, copy, create, push): refused unless ``--allow-admin``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gleitzeit_llm.gateway.errors import GatewayError

if TYPE_CHECKING:
    from gleitzeit_llm.gateway.context import Gateway

__all__ = ["routes"]

ADMIN_ROUTES = {
    "/api/pull": "POST",
    "/api/delete": "DELETE",
    "/api/copy": "POST",
    "/api/create": "POST",
    "/api/push": "POST",
}


def routes(gateway: Gateway) -> list[Route]:
    async def refused(request: Request) -> Response:
        raise GatewayError(
            403,
            f"{request.url.path} is disabled on this gateway: model management changes every instance "
            "of the pool; start the gateway with --allow-admin to allow it",
        )

    return [Route(path, refused, methods=[method]) for path, method in ADMIN_ROUTES.items()]
