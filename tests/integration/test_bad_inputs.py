"""Every bad input of docs/reliability.md, one test each: the error a user sees, and that it
names what is wrong. Nothing here may end in a traceback from inside a library."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gleitzeit_llm import (
    AllInstancesFailedError,
    ConfigError,
    InstanceFailedError,
    NoInstanceAvailableError,
    OllamaPoolProvider,
    PoolConfig,
    RequestError,
    StreamInterruptedError,
)

MESSAGES = [{"role": "user", "content": "hello"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def html_server() -> Iterator[str]:
    """A web server on loopback that answers every request with an HTML page."""

    class Handler(BaseHTTPRequestHandler):
        def _html(self) -> None:
            body = b"<!doctype html><html><body>Welcome to nginx!</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _html

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def pool(*urls: str, **lb: Any) -> OllamaPoolProvider:
    return OllamaPoolProvider(
        instances=[{"id": f"i{n}", "url": url} for n, url in enumerate(urls)],
        load_balancing={"retry_backoff_base": 0.001, "health_check_timeout": 1, **lb},
    )


# -- configuration ----------------------------------------------------------------------------


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text("instances:\n  - url: http://127.0.0.1:1\n   bad: [\n")
    with pytest.raises(ConfigError, match=r"pool\.yaml, line \d+.*malformed YAML"):
        PoolConfig.from_yaml(path)


def test_unknown_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"load_balancing\.strategy.*fastest.*least_loaded"):
        PoolConfig.from_dict({"instances": ["http://127.0.0.1:1"], "load_balancing": {"strategy": "fastest"}})


def test_empty_instance_list_says_what_to_add() -> None:
    with pytest.raises(ConfigError, match="instances") as caught:
        PoolConfig.from_dict({"instances": []})
    assert caught.value.field == "instances"


def test_a_bad_hint_is_the_callers_error_before_any_request(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], time_scale=0)
    with pool(emu.url) as provider, pytest.raises(RequestError, match="load_balancing_strategy"):
        provider.chat_sync("llama3.2", MESSAGES, load_balancing_strategy="fastest")
    assert emu.requests_for("/api/chat") == []


# -- servers that are not there or not Ollama --------------------------------------------------


def test_an_unreachable_url_fails_with_connection_refused() -> None:
    with pool(f"http://127.0.0.1:{free_port()}", retry_attempts=1, retry_same_instance=True) as provider:
        with pytest.raises(
            AllInstancesFailedError, match=r"i0.*cannot connect.*Connection refused"
        ) as caught:
            provider.chat_sync("llama3.2", MESSAGES)
        assert provider.status()["instances"]["i0"]["state"] == "unhealthy"
    assert all(isinstance(e, InstanceFailedError) for e in caught.value.errors)


def test_a_url_that_answers_html_is_not_mistaken_for_ollama(html_server: str) -> None:
    with pool(html_server, retry_attempts=0) as provider:
        with pytest.raises(InstanceFailedError, match=r"does not look like Ollama|not an Ollama"):
            provider.chat_sync("llama3.2", MESSAGES)
        info = provider.status()["instances"]["i0"]
    assert info["state"] == "unhealthy"  # the health probe saw HTML too


# -- models and parameters ---------------------------------------------------------------------


def test_a_model_missing_everywhere_names_the_model(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    with (
        pool(*(e.url for e in emulators)) as provider,
        pytest.raises(NoInstanceAvailableError, match="llama9"),
    ):
        provider.chat_sync("llama9", MESSAGES)


def test_invalid_params_name_the_field_and_the_fix(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], time_scale=0)
    with pool(emu.url) as provider:
        with pytest.raises(RequestError, match=r"max_tokens.*num_predict"):
            provider.chat_sync("llama3.2", MESSAGES, max_tokens=10)
        with pytest.raises(RequestError, match=r"messages\[0\]\.role"):
            provider.chat_sync("llama3.2", [{"role": "wizard", "content": "x"}])
        with pytest.raises(RequestError, match="keep_alive"):
            provider.chat_sync("llama3.2", MESSAGES, keep_alive="forever")
    assert emu.requests_for("/api/chat") == []


def test_an_oversized_input_is_the_callers_error(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["nomic-embed-text"], time_scale=0)
    with pool(emu.url) as provider:
        with pytest.raises(RequestError, match="exceeds the context length"):
            provider.embed_sync("nomic-embed-text", ["word " * 50_000], truncate=False)
        info = provider.status()["instances"]["i0"]
    assert info["failed_requests"] == 0 and not info["circuit_breaker_open"]


# -- broken answers ----------------------------------------------------------------------------


def test_a_server_that_closes_mid_stream_raises_after_the_delivered_chunks(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], time_scale=0)
    emu.set_faults(drop_after_chunks=3)
    with pool(emu.url) as provider:
        chunks = []
        with pytest.raises(StreamInterruptedError):
            for chunk in provider.stream_chat_sync("llama3.2", MESSAGES):
                chunks.append(chunk)
        assert len(chunks) == 3
        assert provider.status()["active_requests"] == 0


def test_an_error_line_after_status_200_carries_ollamas_message(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], time_scale=0)
    emu.set_faults(error_after_chunks=1, stream_error_message="CUDA error: out of memory")

    async def consume() -> None:
        async with pool(emu.url) as provider:
            async for _ in provider.stream_chat("llama3.2", MESSAGES):
                pass

    with pytest.raises(StreamInterruptedError, match="CUDA error: out of memory") as caught:
        asyncio.run(consume())
    assert caught.value.ollama_message == "CUDA error: out of memory"


def test_a_truncated_one_shot_answer_is_retried_elsewhere(ollama_emulators: Any) -> None:
    broken, good = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    broken.set_faults(drop_after_chunks=2)
    with pool(broken.url, good.url, strategy="round_robin") as provider:
        reply = provider.chat_sync("llama3.2", MESSAGES)
    assert reply.pool.instance_id == "i1"
    assert reply.message.content
