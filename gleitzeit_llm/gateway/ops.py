"""Operations routes: ``/metrics`` (Prometheus), ``/healthz`` (for load balancers), ``/status``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from gleitzeit_llm.gateway.context import Gateway

__all__ = ["GatewayMetrics", "routes"]

#: The route labels of the gateway's request metrics (bounded: anything else is "other").
ROUTE_LABELS = frozenset(
    {
        "/",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/show",
        "/api/tags",
        "/api/ps",
        "/api/version",
        "/api/pull",
        "/api/delete",
        "/api/copy",
        "/api/create",
        "/api/push",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/metrics",
        "/healthz",
        "/status",
    }
)


class GatewayMetrics:
    """The gateway's request metrics and the pool's, on one registry of their own.

    Without ``prometheus-client`` installed (the ``prometheus`` extra) it is disabled and
    ``/metrics`` says how to enable it.
    """

    def __init__(self, provider: Any) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError:
            self.registry: Any = None
            return
        from gleitzeit_llm.observability.metrics import DURATION_BUCKETS
        from gleitzeit_llm.observability.prometheus import instrument

        self.registry = CollectorRegistry()
        self.pool = instrument(provider, self.registry)
        self.requests = Counter(
            "gleitzeit_gateway_requests",
            "Requests answered by the gateway, by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gleitzeit_gateway_request_duration_seconds",
            "Request start to the last byte of the answer (a stream: its whole length), by route.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def observe(self, path: str, method: str, status: int, started: float) -> None:
        if self.registry is None:
            return
        route = path if path in ROUTE_LABELS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route).observe(time.perf_counter() - started)

    def close(self) -> None:
        if self.registry is not None:
            self.pool.close()


def routes(gateway: Gateway, metrics: GatewayMetrics) -> list[Route]:
    """The operations routes."""

    async def metrics_route(request: Request) -> Response:
        if metrics.registry is None:
            return JSONResponse(
                {"error": "metrics need prometheus-client: pip install 'gleitzeit-llm[gateway,prometheus]'"},
                status_code=501,
            )
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        manager = gateway.provider.manager
        now = manager._clock()  # the pool's clock: breakers and busy windows are on it
        routable = sum(1 for inst in manager.instances if inst.routable(now))
        status = 200 if routable else 503
        return JSONResponse(
            {"status": "ok" if routable else "unavailable", "routable_instances": routable}, status
        )

    async def status(request: Request) -> Response:
        # The pool status carries instance URLs without credentials (redacted when configured).
        return JSONResponse(await gateway.provider.get_pool_status())

    return [
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/status", status, methods=["GET"]),
    ]
