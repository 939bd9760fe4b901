"""Every failure becomes the right error class, naming the instance, its URL (never its
credentials), the HTTP status and Ollama's own message."""

from __future__ import annotations

import base64
import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from gleitzeit_llm.errors import (
    ConfigError,
    InstanceBusyError,
    InstanceFailedError,
    InstanceTimeoutError,
    ModelNotFoundError,
    RequestError,
    StreamInterruptedError,
)
from gleitzeit_llm.ollama import (
    AsyncOllamaTransport,
    AsyncResponseStream,
    OllamaTransport,
    ResponseStream,
    Timeouts,
    parse_retry_after,
    redact_url,
)

URL = "http://gpu1:11434"
CHAT = {"model": "llama9", "messages": [{"role": "user", "content": "hi"}]}
CHUNK = (
    b'{"model":"llama9","created_at":"2025-10-26T17:21:21.196249Z",'
    b'"message":{"role":"assistant","content":"The"},"done":false}\n'
)


def make(flavour: str, router: respx.Router, url: str = URL, **kwargs: Any) -> Any:
    cls = AsyncOllamaTransport if flavour == "async" else OllamaTransport
    return cls(url, instance_id="gpu-1", transport=httpx.MockTransport(router.handler), **kwargs)


async def run(transport: Any, method: str, *args: Any) -> Any:
    """Call ``method`` on either flavour; streams are read to the end."""
    result = getattr(transport, method)(*args)
    if inspect.isawaitable(result):
        return await result
    if isinstance(result, AsyncResponseStream):
        return [chunk async for chunk in result]
    if isinstance(result, ResponseStream):
        return list(result)
    return result


async def close(transport: Any) -> None:
    if isinstance(transport, AsyncOllamaTransport):
        await transport.aclose()
    else:
        transport.close()


@pytest.fixture(params=["async", "sync"])
def flavour(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def router() -> Iterator[respx.Router]:
    router = respx.Router(base_url=URL, assert_all_called=False)
    yield router


async def fail(flavour: str, router: respx.Router, method: str = "chat", *args: Any, **kwargs: Any) -> Any:
    transport = make(flavour, router, **kwargs)
    try:
        with pytest.raises(Exception) as info:
            await run(transport, method, *(args or (CHAT,)))
    finally:
        await close(transport)
    return info.value


# ---------------------------------------------------------------------------------------------
# HTTP statuses


STATUS_CASES = [
    # status, body, headers, class, ollama_message, message tail
    (
        400,
        {"error": "model is required"},
        {},
        RequestError,
        "model is required",
        "request rejected: model is required (HTTP 400)",
    ),
    (
        400,
        {"error": '"all-minilm" does not support chat'},
        {},
        RequestError,
        '"all-minilm" does not support chat',
        'request rejected: "all-minilm" does not support chat (HTTP 400)',
    ),
    (
        422,
        {"error": "unprocessable"},
        {},
        RequestError,
        "unprocessable",
        "request rejected: unprocessable (HTTP 422)",
    ),
    (
        404,
        {"error": "model 'llama9' not found"},
        {},
        ModelNotFoundError,
        "model 'llama9' not found",
        "model 'llama9' not found (HTTP 404)",
    ),
    (
        404,
        {"error": 'model "llama9" not found, try pulling it first'},
        {},
        ModelNotFoundError,
        'model "llama9" not found, try pulling it first',
        "model 'llama9' not found (HTTP 404)",
    ),
    (
        404,
        "404 page not found",
        {},
        InstanceFailedError,
        None,
        "not an Ollama endpoint: POST /api/chat answered '404 page not found' (HTTP 404)",
    ),
    (
        405,
        "405 method not allowed",
        {},
        InstanceFailedError,
        None,
        "not an Ollama endpoint: POST /api/chat answered '405 method not allowed' (HTTP 405)",
    ),
    (
        429,
        {"error": "too many requests"},
        {"Retry-After": "7"},
        InstanceBusyError,
        "too many requests",
        "busy: too many requests (HTTP 429, retry after 7s)",
    ),
    (
        500,
        {"error": "llama-server process has terminated: exit status 2"},
        {},
        InstanceFailedError,
        "llama-server process has terminated: exit status 2",
        "server error: llama-server process has terminated: exit status 2 (HTTP 500)",
    ),
    (
        500,
        {"error": "model requires more system memory (9.1 GiB) than is available (4.0 GiB)"},
        {},
        InstanceFailedError,
        "model requires more system memory (9.1 GiB) than is available (4.0 GiB)",
        "server error: model requires more system memory (9.1 GiB) than is available (4.0 GiB) (HTTP 500)",
    ),
    (
        502,
        "<html><body>502 Bad Gateway</body></html>",
        {"Content-Type": "text/html"},
        InstanceFailedError,
        None,
        "server error: <html><body>502 Bad Gateway</body></html> (HTTP 502)",
    ),
    (
        503,
        {"error": "server busy, please try again.  maximum pending requests exceeded"},
        {},
        InstanceBusyError,
        "server busy, please try again.  maximum pending requests exceeded",
        "busy: server busy, please try again.  maximum pending requests exceeded (HTTP 503)",
    ),
    (
        401,
        "Unauthorized",
        {},
        InstanceFailedError,
        None,
        "access denied: Unauthorized (HTTP 401); check the credentials for this instance",
    ),
    (
        302,
        "",
        {"Location": "http://alice:s3cret@login.example/"},
        InstanceFailedError,
        None,
        "POST /api/chat redirected to http://login.example/ (HTTP 302); "
        "point the instance URL at the Ollama server itself",
    ),
]


def _response(status: int, body: Any, headers: dict[str, str]) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.Response(status, json=body, headers=headers)
    return httpx.Response(status, text=body, headers=headers)


@pytest.mark.parametrize("method", ["chat", "stream_chat"])
@pytest.mark.parametrize(("status", "body", "headers", "cls", "ollama_message", "tail"), STATUS_CASES)
async def test_status_maps_to_the_error_class(
    flavour: str,
    router: respx.Router,
    method: str,
    status: int,
    body: Any,
    headers: dict[str, str],
    cls: type[Exception],
    ollama_message: str | None,
    tail: str,
) -> None:
    router.post("/api/chat").mock(return_value=_response(status, body, headers))
    error = await fail(flavour, router, method)
    assert type(error) is cls
    assert error.instance == "gpu-1"
    assert error.url == URL
    assert error.status == status
    assert error.ollama_message == ollama_message
    assert str(error) == f"instance 'gpu-1' (http://gpu1:11434): {tail}"


async def test_model_not_found_names_the_requested_model(flavour: str, router: respx.Router) -> None:
    router.post("/api/chat").mock(
        return_value=httpx.Response(404, json={"error": "model 'llama9' not found"})
    )
    error = await fail(flavour, router)
    assert isinstance(error, ModelNotFoundError)
    assert error.model == "llama9"
    assert not error.counts_against_instance and error.retryable


async def test_show_of_a_missing_model_is_model_not_found(flavour: str, router: respx.Router) -> None:
    router.post("/api/show").mock(return_value=httpx.Response(404, json={"error": "model 'x' not found"}))
    error = await fail(flavour, router, "show", "x")
    assert isinstance(error, ModelNotFoundError) and error.model == "x"


async def test_request_errors_are_not_retryable_and_name_the_field(
    flavour: str, router: respx.Router
) -> None:
    router.post("/api/chat").mock(return_value=httpx.Response(400, json={"error": "model is required"}))
    error = await fail(flavour, router)
    assert isinstance(error, RequestError)
    assert error.field == "model" and not error.retryable


async def test_busy_is_not_counted_against_the_instance(flavour: str, router: respx.Router) -> None:
    router.post("/api/chat").mock(return_value=httpx.Response(503, json={"error": "server busy"}))
    error = await fail(flavour, router)
    assert isinstance(error, InstanceBusyError)
    assert error.retry_after is None and not error.counts_against_instance


async def test_retry_after_as_an_http_date(flavour: str, router: respx.Router) -> None:
    past = format_datetime(datetime(2020, 1, 1, tzinfo=timezone.utc), usegmt=True)
    router.post("/api/chat").mock(return_value=httpx.Response(429, headers={"Retry-After": past}))
    error = await fail(flavour, router)
    assert isinstance(error, InstanceBusyError) and error.retry_after == 0.0


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90.0)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


# ---------------------------------------------------------------------------------------------
# Status 200 that is not Ollama


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"<!DOCTYPE html><html><body>Welcome to nginx!</body></html>", "text/html", "not JSON"),
        (b"hello", "text/plain", "not JSON"),
        (b"", "application/json", "not JSON"),
        (b'{"foo": 1}', "application/json", "not a /api/chat response (model: Field required)"),
    ],
)
async def test_a_200_that_is_not_ollama_json_is_an_instance_failure(
    flavour: str, router: respx.Router, body: bytes, content_type: str, reason: str
) -> None:
    router.post("/api/chat").mock(
        return_value=httpx.Response(200, content=body, headers={"Content-Type": content_type})
    )
    error = await fail(flavour, router)
    assert type(error) is InstanceFailedError
    assert error.status == 200 and error.ollama_message is None
    assert f"POST /api/chat answered HTTP 200 with {content_type}" in str(error)
    assert reason in str(error)
    assert str(error).endswith("this does not look like Ollama")


async def test_a_200_carrying_an_ollama_error_is_an_instance_failure(
    flavour: str, router: respx.Router
) -> None:
    router.post("/api/chat").mock(return_value=httpx.Response(200, json={"error": "unexpected EOF"}))
    router.post("/api/show").mock(return_value=httpx.Response(200, json={"error": "boom"}))
    error = await fail(flavour, router)
    assert type(error) is InstanceFailedError and error.ollama_message == "unexpected EOF"
    error = await fail(flavour, router, "show", "m")
    assert type(error) is InstanceFailedError and error.ollama_message == "boom"


async def test_an_html_page_instead_of_a_stream_is_an_instance_failure(
    flavour: str, router: respx.Router
) -> None:
    router.post("/api/chat").mock(
        return_value=httpx.Response(200, text="<html>login</html>", headers={"Content-Type": "text/html"})
    )
    error = await fail(flavour, router, "stream_chat")
    assert isinstance(error, InstanceFailedError) and "does not look like Ollama" in str(error)


async def test_a_stream_chunk_of_the_wrong_shape_interrupts_the_stream(
    flavour: str, router: respx.Router
) -> None:
    body = CHUNK + b'{"model":"llama9","done":false}\n'
    router.post("/api/chat").mock(return_value=httpx.Response(200, content=body))
    error = await fail(flavour, router, "stream_chat")
    assert isinstance(error, StreamInterruptedError)
    assert error.chunks_received == 1 and "does not look like Ollama" in str(error)


async def test_an_error_line_after_200_interrupts_the_stream(flavour: str, router: respx.Router) -> None:
    body = CHUNK + CHUNK + b'{"error":"an error was encountered while running the model"}\n'
    router.post("/api/chat").mock(return_value=httpx.Response(200, content=body))
    error = await fail(flavour, router, "stream_chat")
    assert isinstance(error, StreamInterruptedError)
    assert error.chunks_received == 2
    assert error.ollama_message == "an error was encountered while running the model"
    assert (error.instance, error.url, error.status) == ("gpu-1", URL, 200)


async def test_a_stream_without_done_is_truncated(flavour: str, router: respx.Router) -> None:
    router.post("/api/chat").mock(return_value=httpx.Response(200, content=CHUNK * 3))
    error = await fail(flavour, router, "stream_chat")
    assert isinstance(error, StreamInterruptedError) and "truncated" in str(error)
    assert error.chunks_received == 3


# ---------------------------------------------------------------------------------------------
# Transport failures and timeouts


@pytest.mark.parametrize("method", ["chat", "stream_chat"])
@pytest.mark.parametrize(
    ("exc", "cls", "phase", "text"),
    [
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            InstanceFailedError,
            None,
            "cannot connect: [Errno 111] Connection refused",
        ),
        (
            httpx.ConnectError("[Errno -2] Name or service not known"),
            InstanceFailedError,
            None,
            "cannot connect: [Errno -2] Name or service not known",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            InstanceFailedError,
            None,
            "connection failed: Server disconnected without sending a response.",
        ),
        (
            httpx.ReadError("[Errno 104] Connection reset by peer"),
            InstanceFailedError,
            None,
            "connection failed: [Errno 104] Connection reset by peer",
        ),
        (
            httpx.ConnectTimeout("timed out"),
            InstanceTimeoutError,
            "connect",
            "no connection within 5s (connect timeout)",
        ),
        (
            httpx.ReadTimeout("timed out"),
            InstanceTimeoutError,
            "first_byte",
            "no response within 300s (first_byte timeout)",
        ),
        (
            httpx.WriteTimeout("timed out"),
            InstanceTimeoutError,
            "first_byte",
            "no response within 300s (first_byte timeout)",
        ),
        (
            httpx.PoolTimeout("timed out"),
            InstanceBusyError,
            None,
            "no free connection in the local pool within 300s (all max_connections in use)",
        ),
    ],
)
async def test_failures_before_the_response(
    flavour: str, router: respx.Router, method: str, exc: Exception, cls: type, phase: str | None, text: str
) -> None:
    router.post("/api/chat").mock(side_effect=exc)
    error = await fail(flavour, router, method)
    assert type(error) is cls
    assert str(error) == f"instance 'gpu-1' (http://gpu1:11434): {text}"
    assert (error.instance, error.url, error.status, error.ollama_message) == ("gpu-1", URL, None, None)
    if phase is not None:
        assert error.phase == phase


class BrokenBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that delivers some chunks, then fails the way a socket would."""

    def __init__(self, chunks: list[bytes], exc: Exception) -> None:
        self.chunks = chunks
        self.exc = exc

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise self.exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise self.exc


async def test_a_gap_between_chunks_is_an_idle_timeout(flavour: str, router: respx.Router) -> None:
    router.post("/api/chat").mock(
        return_value=httpx.Response(200, stream=BrokenBody([CHUNK, CHUNK], httpx.ReadTimeout("timed out")))
    )
    error = await fail(flavour, router, "stream_chat", timeouts=Timeouts(idle=7.5))
    assert type(error) is InstanceTimeoutError and error.phase == "idle"
    assert error.status == 200
    assert str(error) == (
        "instance 'gpu-1' (http://gpu1:11434): nothing received for 7.5s after 2 chunks (idle timeout)"
    )


async def test_a_stalled_non_streamed_body_is_an_idle_timeout(flavour: str, router: respx.Router) -> None:
    router.post("/api/chat").mock(
        return_value=httpx.Response(200, stream=BrokenBody([b'{"model":'], httpx.ReadTimeout("timed out")))
    )
    error = await fail(flavour, router)
    assert type(error) is InstanceTimeoutError and error.phase == "idle"


@pytest.mark.parametrize(
    "exc", [httpx.RemoteProtocolError("peer closed connection"), httpx.ReadError("reset")]
)
async def test_a_connection_lost_mid_stream_interrupts_it(
    flavour: str, router: respx.Router, exc: Exception
) -> None:
    router.post("/api/chat").mock(
        return_value=httpx.Response(200, stream=BrokenBody([CHUNK, CHUNK[:20]], exc))
    )
    error = await fail(flavour, router, "stream_chat")
    assert type(error) is StreamInterruptedError
    assert error.chunks_received == 1 and error.status == 200
    assert str(error).startswith("instance 'gpu-1' (http://gpu1:11434): connection lost after 1 chunks")


# ---------------------------------------------------------------------------------------------
# Credentials


SECRET_URL = "http://alice:s3cret@gpu1:11434"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"error": "model 'llama9' not found"}),
        httpx.Response(500, json={"error": "llama runner process has terminated"}),
        httpx.Response(404, text="404 page not found"),
        httpx.Response(200, text="<html>"),
        httpx.Response(302, headers={"Location": "http://alice:s3cret@gpu1:11434/login"}),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(200, content=CHUNK + b'{"error":"boom"}\n'),
    ],
)
async def test_credentials_never_appear_in_errors(
    flavour: str, response: Any, caplog: pytest.LogCaptureFixture
) -> None:
    router = respx.Router(base_url="http://gpu1:11434", assert_all_called=False)
    route = router.post("/api/chat")
    if isinstance(response, Exception):
        route.mock(side_effect=response)
    else:
        route.mock(return_value=response)
    caplog.set_level(logging.DEBUG)
    for method in ("chat", "stream_chat"):
        error = await fail(flavour, router, method, url=SECRET_URL)
        shown = " ".join([str(error), repr(error), str(error.url), str(error.__dict__), caplog.text])
        assert "s3cret" not in shown and "alice" not in shown
        assert error.url == "http://gpu1:11434"


async def test_credentials_are_sent_as_basic_auth(flavour: str, router: respx.Router) -> None:
    route = router.get("/api/version").mock(return_value=httpx.Response(200, json={"version": "0.5.1"}))
    transport = make(flavour, router, url="http://alice:p%40ss@gpu1:11434")
    try:
        await run(transport, "version")
    finally:
        await close(transport)
    expected = "Basic " + base64.b64encode(b"alice:p@ss").decode()
    assert route.calls.last.request.headers["Authorization"] == expected
    assert route.calls.last.request.url == "http://gpu1:11434/api/version"
    assert (
        "alice" not in repr(transport) and "p@ss" not in repr(transport) and "p%40ss" not in repr(transport)
    )
    assert transport.url == "http://gpu1:11434"


async def test_an_explicit_authorization_header_wins(flavour: str, router: respx.Router) -> None:
    route = router.get("/api/version").mock(return_value=httpx.Response(200, json={"version": "0.5.1"}))
    transport = make(flavour, router, url=SECRET_URL, headers={"authorization": "Bearer token"})
    try:
        await run(transport, "version")
    finally:
        await close(transport)
    assert route.calls.last.request.headers["Authorization"] == "Bearer token"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://alice:s3cret@gpu1.example:11434/", "https://gpu1.example:11434/"),
        ("http://alice@gpu1:11434", "http://gpu1:11434"),
        ("http://gpu1:11434/api/chat", "http://gpu1:11434/api/chat"),
        ("see http://a:b@h1 and https://c:d@h2/x", "see http://h1 and https://h2/x"),
        (None, "None"),
    ],
)
def test_redact_url(url: object, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url", ["ftp://alice:s3cret@gpu1", "", "http://alice:s3cret@", "http://alice:s3cret@gpu1:99999"]
)
def test_an_unusable_url_is_a_config_error_without_credentials(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        OllamaTransport(url)
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value.value)
    assert info.value.field == "url"
