"""Shared test configuration: the emulator fixtures (ollama_emulator, ollama_emulators) and
certificates for TLS tests (pki, server_tls)."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["gleitzeit_llm.testing.pytest_plugin"]


@pytest.fixture(autouse=True)
def _no_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool with no configuration reads OLLAMA_HOST (as Ollama's client does): the suite must
    not depend on the one of the machine it runs on. Tests of it set their own."""
    monkeypatch.delenv("OLLAMA_HOST", raising=False)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                "-extfile", str(d / "san.cnf"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    return {n: str(d / n) for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture
def server_tls(pki: dict[str, str]) -> Callable[..., ssl.SSLContext]:
    """``server_tls(require_client_cert=False)`` -> a server-side context with the pki's server
    certificate (and, when asked, one that demands a client certificate signed by its CA)."""

    def make(*, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki["server.pem"], pki["server.key"])
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(pki["ca.pem"])
        return context

    return make


@contextlib.contextmanager
def _examples_running(
    directory: Path, scripts: Iterable[str], *, merge_stderr: bool = False
) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every script in ``directory`` run at once, as a user runs it (no ``GLEITZEIT_*`` settings,
    no OpenAI key to fall back on): script -> finished process. No child and no pipe outlives the
    block, also when pytest-timeout interrupts it (a leaked pipe would surface as a
    ResourceWarning in whichever test collects garbage next)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GLEITZEIT_OLLAMA_", "GLEITZEIT_EXAMPLE_"))
    }
    env.pop("OPENAI_API_KEY", None)
    running = {
        script: subprocess.Popen(
            [sys.executable, str(directory / script)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
        )
        for script in scripts
    }
    try:
        done = {}
        for script, process in running.items():
            out, err = process.communicate(timeout=90)
            done[script] = subprocess.CompletedProcess(process.args, process.returncode, out, err or "")
        yield done
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture(scope="session")
def examples_running() -> Callable[
    ..., contextlib.AbstractContextManager[dict[str, subprocess.CompletedProcess[str]]]
]:
    """``with examples_running(directory, scripts) as done:`` (see :func:`_examples_running`)."""
    return _examples_running
