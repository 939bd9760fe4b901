"""What every route of one gateway shares: the pool, the settings, reading a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.gateway.body import read_json, require_model
from gleitzeit_llm.gateway.fanout import selected
from gleitzeit_llm.gateway.headers import hints_from_headers
from gleitzeit_llm.gateway.settings import GatewaySettings
from gleitzeit_llm.hints import RoutingHints

if TYPE_CHECKING:
    from starlette.requests import Request

    from gleitzeit_llm.provider import OllamaPoolProvider
    from gleitzeit_llm.routing.instance import OllamaInstance

__all__ = ["Gateway"]


@dataclass
class Gateway:
    """One gateway: its pool and settings."""

    provider: OllamaPoolProvider
    settings: GatewaySettings

    async def read(
        self, request: Request, *, model_field: str = "model"
    ) -> tuple[dict[str, Any], RoutingHints]:
        """The request's JSON body (with its model) and routing hints: 400 or 413 otherwise.
        The headers are checked first: a bad hint fails before the body is read."""
        hints = self.hints(request)
        body = await read_json(request, self.settings.max_body)
        require_model(body, model_field)
        return body, hints

    def hints(self, request: Request) -> RoutingHints:
        return hints_from_headers(request.headers)

    def targets(self, hints: RoutingHints) -> list[OllamaInstance]:
        """The instances a fanned-out request goes to: those the tag headers select."""
        return selected(self.provider, hints)
