"""TLS options per instance (CA bundle, no verification, client certificates) against a real TLS
server on loopback, with certificates made by openssl for this test."""

from __future__ import annotations

import json
import shutil
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gleitzeit_llm import ConfigError, GleitzeitError, OllamaPoolProvider, PoolConfig

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

MESSAGES = [{"role": "user", "content": "hi"}]


class FakeOllama(BaseHTTPRequestHandler):
    """Just enough of Ollama for a health check and one streamed chat."""

    def _json(self, body: Any, content_type: str = "application/json; charset=utf-8") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        answers = {
            "/api/version": {"version": "0.12.6"},
            "/api/tags": {"models": [{"name": "m:latest", "model": "m:latest"}]},
            "/api/ps": {"models": []},
        }
        self._json(answers.get(self.path, {}))

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def chunk(content: str, done: bool) -> dict[str, Any]:
            message = {"role": "assistant", "content": content}
            return {"model": "m", "created_at": "2025-01-01T00:00:00Z", "message": message, "done": done}

        lines = [chunk("over tls", False), {**chunk("", True), "done_reason": "stop"}]
        self._json("".join(json.dumps(line) + "\n" for line in lines).encode(), "application/x-ndjson")

    def log_message(self, *args: Any) -> None:
        pass


def tls_server(context: ssl.SSLContext) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOllama)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def https_url(server_tls: Callable[..., ssl.SSLContext]) -> Iterator[str]:
    yield from tls_server(server_tls())


@pytest.fixture
def mtls_url(server_tls: Callable[..., ssl.SSLContext]) -> Iterator[str]:
    yield from tls_server(server_tls(require_client_cert=True))


def ask(url: str, **tls: Any) -> str:
    instance = {"id": "secure", "url": url, **tls}
    with OllamaPoolProvider(instances=[instance], load_balancing={"retry_attempts": 0}) as pool:
        return pool.chat_sync("m", MESSAGES).message.content


def test_a_ca_bundle_verifies_the_server(https_url: str, pki: dict[str, str]) -> None:
    assert ask(https_url, verify=pki["ca.pem"]) == "over tls"


def test_an_unknown_ca_is_refused_by_default(https_url: str) -> None:
    with pytest.raises(GleitzeitError, match=r"(?i)certificate"):
        ask(https_url)


def test_verification_can_be_turned_off(https_url: str) -> None:
    assert ask(https_url, verify=False) == "over tls"


def test_a_client_certificate_opens_a_mutual_tls_server(mtls_url: str, pki: dict[str, str]) -> None:
    with pytest.raises(GleitzeitError):
        ask(mtls_url, verify=pki["ca.pem"])
    answer = ask(mtls_url, verify=pki["ca.pem"], client_cert=pki["client.pem"], client_key=pki["client.key"])
    assert answer == "over tls"


def test_health_checks_use_the_same_tls_settings(https_url: str, pki: dict[str, str]) -> None:
    instance = {"id": "secure", "url": https_url, "verify": pki["ca.pem"]}
    with OllamaPoolProvider(instances=[instance]) as pool:
        assert pool.status()["instances"]["secure"]["state"] == "healthy"


def test_missing_tls_files_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"instances\[0\]\.verify.*no such file"):
        PoolConfig.from_dict(
            {"instances": [{"url": "https://127.0.0.1:1", "verify": str(tmp_path / "ca.pem")}]}
        )
    with pytest.raises(ConfigError, match=r"client_key"):
        PoolConfig.from_dict({"instances": [{"url": "https://127.0.0.1:1", "client_key": str(tmp_path)}]})


def test_tls_files_that_are_not_pem_are_configuration_errors(tmp_path: Path, pki: dict[str, str]) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    with pytest.raises(ConfigError, match=r"instances\[0\]\.verify.*not a PEM CA bundle") as info:
        PoolConfig.from_dict({"instances": [{"url": "https://127.0.0.1:1", "verify": str(not_pem)}]})
    assert info.value.field == "instances[0].verify"
    assert "BEGIN CERTIFICATE" in str(info.value)  # says what the file should hold
    with pytest.raises(ConfigError, match=r"instances\[0\]\.client_cert.*cannot be loaded") as info:
        PoolConfig.from_dict(
            {
                "instances": [
                    {
                        "url": "https://127.0.0.1:1",
                        "client_cert": str(not_pem),
                        "client_key": pki["client.key"],
                    }
                ]
            }
        )
    assert info.value.field == "instances[0].client_cert"
    # a provider is configured the same way: the error comes before any thread or socket
    with pytest.raises(ConfigError, match=r"instances\[0\]\.verify"):
        OllamaPoolProvider(instances=[{"url": "https://127.0.0.1:1", "verify": str(not_pem)}])
