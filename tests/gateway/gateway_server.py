"""A real gateway for tests: uvicorn on a free loopback port, in a thread of this process."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from gleitzeit_llm.gateway import GatewaySettings, create_app
from gleitzeit_llm.provider import OllamaPoolProvider


class GatewayServer:
    """``create_app`` served by uvicorn on 127.0.0.1 until :meth:`stop`; ``url`` is its base URL.

    ``provider`` is the app's pool (built from ``config`` and owned by the app), so tests can
    look at its state (in-flight counts) while requests run.
    """

    def __init__(self, config: Any, settings: GatewaySettings | None = None) -> None:
        self.app = create_app(config=config, settings=settings)
        self.provider: OllamaPoolProvider = self.app.state.gateway.provider
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(512)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config_ = uvicorn.Config(
            self.app, log_level="warning", loop="asyncio", lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config_)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline_hit = not wait_until(lambda: self._server.started or not self._thread.is_alive(), 15.0)
        if deadline_hit or not self._server.started:
            raise RuntimeError("the gateway did not start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_until(predicate: Any, timeout: float) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds passed (False)."""
    event = threading.Event()  # never set: wait() is a sleep that does not spin
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        event.wait(0.005)
    return True
