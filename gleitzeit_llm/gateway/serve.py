"""Running the gateway on uvicorn: ``gleitzeit-llm serve`` (see :func:`serve`)."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any, TextIO

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.gateway.app import create_app
from gleitzeit_llm.gateway.settings import KEYS_ENV, GatewaySettings, is_loopback

__all__ = ["app_from_env", "serve", "startup_warnings"]

# How `serve --workers N` hands the pool and settings to uvicorn's worker processes (which import
# the app by name). The keys travel in KEYS_ENV, the variable users set anyway.
_CONFIG_ENV = "GLEITZEIT_GATEWAY_CONFIG"
_SETTINGS_ENV = "GLEITZEIT_GATEWAY_SETTINGS"


def startup_warnings(config: PoolConfig, settings: GatewaySettings, host: str, workers: int) -> list[str]:
    """What ``serve`` warns about before it starts (nothing stops it)."""
    warnings = []
    if not settings.api_keys and not is_loopback(host):
        warnings.append(
            f"listening on {host} without an API key: anyone who reaches this port can use the pool; "
            f"give --api-key KEY (or {KEYS_ENV})"
        )
    if workers > 1 and getattr(config, "shared_state", None) is None:
        warnings.append(
            f"--workers {workers}: each worker has its own pool state, so max_concurrent and the "
            "breakers count per worker (the pool can take up to N times max_concurrent per instance); "
            "configure shared_state (Redis) to share them"
        )
    return warnings


def serve(
    config_path: str | None,
    settings: GatewaySettings,
    *,
    host: str = "127.0.0.1",
    port: int = 11435,
    workers: int = 1,
    log_level: str = "info",
    out: TextIO = sys.stderr,
) -> None:
    """Serve the pool of ``config_path`` (None: the environment) until interrupted."""
    import uvicorn

    config = PoolConfig.load(config_path)
    for warning in startup_warnings(config, settings, host, workers):
        print(f"gleitzeit-llm serve: warning: {warning}", file=out, flush=True)
    if workers > 1:
        os.environ[_CONFIG_ENV] = config_path or ""
        os.environ[_SETTINGS_ENV] = json.dumps(
            {"allow_admin": settings.allow_admin, "max_body": settings.max_body}
        )
        os.environ[KEYS_ENV] = ",".join(settings.api_keys)
        uvicorn.run(
            "gleitzeit_llm.gateway.serve:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
        return
    # Bound here, not by uvicorn: with --port 0 the line below names the port the system chose.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"gleitzeit-llm serve: listening on http://{shown}:{bound}", file=out, flush=True)
    app = create_app(config=config, settings=settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


def app_from_env() -> Any:
    """The app of one ``--workers`` worker, from what :func:`serve` left in the environment."""
    options = json.loads(os.environ.get(_SETTINGS_ENV) or "{}")
    settings = GatewaySettings(api_keys=GatewaySettings.keys_from(()), **options)
    return create_app(config=PoolConfig.load(os.environ.get(_CONFIG_ENV) or None), settings=settings)
