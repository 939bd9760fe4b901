"""OllamaPoolProvider's decisions, with respx standing in for the servers (no sockets)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest
import respx

from gleitzeit_llm import (
    AllInstancesFailedError,
    InstanceFailedError,
    NoInstanceAvailableError,
    OllamaPoolProvider,
    RequestError,
)

A = "http://127.0.0.1:21001"
B = "http://127.0.0.1:21002"


def ndjson(*chunks: dict[str, Any]) -> httpx.Response:
    body = "".join(json.dumps(c) + "\n" for c in chunks)
    return httpx.Response(200, content=body.encode(), headers={"content-type": "application/x-ndjson"})


def chat_stream(text: str = "hello", model: str = "llama3.2") -> httpx.Response:
    return ndjson(
        {
            "model": model,
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text},
            "done": False,
        },
        {
            "model": model,
            "created_at": "2025-01-01T00:00:01Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 2_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": 3,
            "prompt_eval_duration": 100_000,
            "eval_count": 2,
            "eval_duration": 200_000,
        },
    )


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message})


def provider(**lb: Any) -> OllamaPoolProvider:
    return OllamaPoolProvider(
        instances=[{"id": "a", "url": A, "priority": 1}, {"id": "b", "url": B, "priority": 2}],
        load_balancing={"retry_backoff_base": 0.001, "retry_backoff_max": 0.002, **lb},
        health_checks=False,
    )


@respx.mock
async def test_hints_never_reach_ollama_and_callers_params_are_untouched() -> None:
    route = respx.post(f"{A}/api/chat").mock(return_value=chat_stream())
    params = {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "load_balancing_strategy": "round_robin",
        "instance_tags": [],
        "fallback_model": "phi3",
        "max_latency": 1000,
        "require_gpu": False,
    }
    snapshot = json.loads(json.dumps(params))
    async with provider() as pool:
        result = await pool.execute("llm/chat", params)
    sent = json.loads(route.calls.last.request.content)
    assert set(sent) == {"model", "messages", "stream"}
    assert params == snapshot
    assert result["message"]["content"] == "hello"
    assert result["pool"]["instance_id"] == "a"
    assert result["pool"]["attempts"] == 1
    assert result["pool"]["fallback_used"] is False


@respx.mock
async def test_invalid_params_fail_before_any_instance_is_picked() -> None:
    route = respx.post(f"{A}/api/chat").mock(return_value=chat_stream())
    async with provider() as pool:
        with pytest.raises(RequestError, match="messages"):
            await pool.execute("llm/chat", {"model": "llama3.2", "messages": "not a list"})
        with pytest.raises(RequestError, match="unknown method"):
            await pool.execute("llm/translate", {"model": "llama3.2"})
        with pytest.raises(RequestError, match="num_predict"):
            await pool.chat("llama3.2", [], max_tokens=5)
    assert not route.called


@respx.mock
async def test_ollama_400_is_raised_at_once_and_never_counted() -> None:
    route = respx.post(f"{A}/api/chat").mock(return_value=error(400, '"llama3.2" does not support thinking'))
    respx.post(f"{B}/api/chat").mock(return_value=chat_stream())
    async with provider() as pool:
        with pytest.raises(RequestError, match="does not support thinking"):
            await pool.chat("llama3.2", [{"role": "user", "content": "hi"}], think=True)
        inst = pool.manager.get("a")
        assert route.call_count == 1
        assert inst.breaker.consecutive_failures == 0
        assert inst.metrics.failed_requests == 0


@respx.mock
async def test_a_failed_instance_is_not_retried_while_another_exists() -> None:
    a = respx.post(f"{A}/api/chat").mock(return_value=error(500, "llama runner process has terminated"))
    b = respx.post(f"{B}/api/chat").mock(return_value=chat_stream("from b"))
    async with provider() as pool:
        reply = await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
    assert reply.message.content == "from b"
    assert reply.pool.instance_id == "b"
    assert reply.pool.attempts == 2
    assert a.call_count == 1 and b.call_count == 1


@respx.mock
async def test_missing_model_everywhere_uses_the_fallback_and_says_so() -> None:
    for url in (A, B):
        respx.post(f"{url}/api/chat").mock(
            side_effect=lambda request: (
                error(404, "model 'llama9' not found")
                if json.loads(request.content)["model"] == "llama9"
                else chat_stream("fallback answer", "llama3.2")
            )
        )
    async with provider() as pool:
        reply = await pool.chat("llama9", [{"role": "user", "content": "hi"}], fallback_model="llama3.2")
        assert reply.pool.fallback_used is True
        assert reply.pool.model == "llama3.2" and reply.pool.requested_model == "llama9"
        assert reply.message.content == "fallback answer"
        with pytest.raises(NoInstanceAvailableError, match="llama9"):
            await pool.chat("llama9", [{"role": "user", "content": "again"}])


@respx.mock
async def test_every_instance_failing_raises_one_error_with_each_attempt() -> None:
    respx.post(f"{A}/api/chat").mock(return_value=error(500, "boom a"))
    respx.post(f"{B}/api/chat").mock(return_value=error(502, "boom b"))
    async with provider(retry_attempts=1) as pool:
        with pytest.raises(AllInstancesFailedError) as caught:
            await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
    assert len(caught.value.errors) == caught.value.attempts == 2
    assert caught.value.instances == ["a", "b"]
    assert "boom a" in str(caught.value) and "boom b" in str(caught.value)


@respx.mock
def test_sync_twins_share_the_same_pool_state() -> None:
    respx.post(f"{A}/api/chat").mock(return_value=chat_stream("sync"))
    respx.post(f"{A}/api/embed").mock(
        return_value=httpx.Response(
            200, json={"model": "m", "embeddings": [[0.6, 0.8]], "prompt_eval_count": 2}
        )
    )
    with provider() as pool:
        reply = pool.chat_sync("llama3.2", [{"role": "user", "content": "hi"}])
        vectors = pool.embed_sync("m", ["x"])
        chunks = list(pool.stream_chat_sync("llama3.2", [{"role": "user", "content": "hi"}]))
        assert reply.message.content == "sync"
        assert vectors.embeddings == [[0.6, 0.8]]
        assert "".join(c.message.content for c in chunks) == "sync"
        assert pool.status()["instances"]["a"]["total_requests"] == 3
        assert pool.status()["active_requests"] == 0


@respx.mock
async def test_retry_after_is_honoured_before_the_same_instance_is_tried_again() -> None:
    calls: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(503, json={"error": "server busy"}, headers={"Retry-After": "0.3"})
        return chat_stream("after the wait")

    respx.post(f"{A}/api/chat").mock(side_effect=answer)
    # a pool of one retries only when asked to (#14)
    pool = OllamaPoolProvider(
        instances=[{"id": "a", "url": A}], load_balancing={"retry_same_instance": True}, health_checks=False
    )
    async with pool:
        reply = await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
    assert reply.message.content == "after the wait"
    assert reply.pool.attempts == 2
    assert calls[1] - calls[0] >= 0.3  # never earlier than the server asked
    assert pool.status()["instances"]["a"]["busy_rejections"] == 1


@respx.mock
async def test_routing_decisions_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    respx.post(f"{A}/api/chat").mock(return_value=chat_stream())
    caplog.set_level(logging.DEBUG, logger="gleitzeit_llm")
    async with provider() as pool:
        await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
    messages = [r.getMessage() for r in caplog.records if r.name == "gleitzeit_llm"]
    assert any(m.startswith("routing_decision instance=a") for m in messages)
    assert any(m.startswith("request_finished instance=a") and "outcome=success" in m for m in messages)


@respx.mock
async def test_a_failover_event_only_when_another_attempt_follows() -> None:
    respx.post(f"{A}/api/chat").mock(return_value=error(500, "boom a"))
    respx.post(f"{B}/api/chat").mock(return_value=error(500, "boom b"))
    kinds: list[str] = []
    async with provider(retry_attempts=1) as pool:
        pool.events.subscribe(lambda event: kinds.append(event.kind))
        with pytest.raises(AllInstancesFailedError):
            await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
    assert kinds.count("request_finished") == 2
    assert kinds.count("failover") == 1  # after the first attempt only: the second was the last


@respx.mock
async def test_attempts_count_only_routed_requests_and_timeouts_are_timeout_errors() -> None:
    from gleitzeit_llm import InstanceTimeoutError

    assert issubclass(InstanceTimeoutError, TimeoutError)
    for url in (A, B):
        respx.post(f"{url}/api/chat").mock(
            side_effect=lambda request: (
                error(404, "model 'llama9' not found")
                if json.loads(request.content)["model"] == "llama9"
                else chat_stream("fallback", "llama3.2")
            )
        )
    async with provider() as pool:
        reply = await pool.chat("llama9", [{"role": "user", "content": "hi"}], fallback_model="llama3.2")
    assert reply.pool.attempts == 3  # two 404s, then the fallback: no attempt for "nowhere left"


@respx.mock
async def test_a_per_call_require_gpu_false_overrides_a_default() -> None:
    from gleitzeit_llm import RoutingHints

    respx.post(f"{A}/api/chat").mock(return_value=chat_stream())
    async with provider() as pool:
        reply = await pool.chat(
            "llama3.2",
            [{"role": "user", "content": "hi"}],
            hints=RoutingHints(require_gpu=True),
            require_gpu=False,
        )
    assert reply.pool.instance_id == "a"


# ---------------------------------------------------------------------------------------------
# The happy path stays lean: no retry machinery and no unobserved events until they are needed


def _count_constructions(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    made: list[int] = []
    real = getattr(module, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return made


@respx.mock
async def test_tenacity_is_set_up_only_after_a_first_attempt_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    import gleitzeit_llm._async.calls as send_chain

    made = _count_constructions(monkeypatch, send_chain, "AsyncRetrying")
    a = respx.post(f"{A}/api/chat").mock(
        side_effect=[chat_stream("ok"), error(500, "boom"), error(500, "boom")]
    )
    respx.post(f"{B}/api/chat").mock(return_value=chat_stream("from b"))
    async with provider() as pool:
        first = await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
        assert (first.pool.attempts, made) == (1, [])
        second = await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
    assert (second.pool.instance_id, second.pool.attempts, len(made)) == ("b", 2, 1)
    assert a.call_count == 2


@pytest.mark.parametrize(("retry_attempts", "expected"), [(0, 1), (1, 2), (2, 3), (4, 5)])
@respx.mock
def test_the_retry_budget_counts_the_bare_first_attempt(retry_attempts: int, expected: int) -> None:
    urls = [f"http://127.0.0.1:2110{i}" for i in range(3)]
    routes = [respx.post(f"{u}/api/chat").mock(return_value=error(500, "boom")) for u in urls]
    pool = OllamaPoolProvider(
        instances=[{"id": f"i{n}", "url": u} for n, u in enumerate(urls)],
        load_balancing={
            "retry_attempts": retry_attempts,
            "retry_backoff_base": 0.001,
            "retry_backoff_max": 0.002,
        },
        health_checks=False,
    )
    with pool, pytest.raises((AllInstancesFailedError, InstanceFailedError)):
        pool.chat_sync("llama3.2", [{"role": "user", "content": "hi"}])
    assert sum(r.call_count for r in routes) == expected  # 1 + retry_attempts


@respx.mock
async def test_routing_events_are_built_only_when_someone_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    import gleitzeit_llm.manager as manager_module

    decisions = _count_constructions(monkeypatch, manager_module, "RoutingDecision")
    finished = _count_constructions(monkeypatch, manager_module, "RequestFinished")
    respx.post(f"{A}/api/chat").mock(return_value=chat_stream())
    async with provider() as pool:
        await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
        assert (decisions, finished) == ([], [])
        seen: list[str] = []
        pool.events.subscribe(lambda event: seen.append(event.kind))
        await pool.chat("llama3.2", [{"role": "user", "content": "hi"}])
    assert (len(decisions), len(finished)) == (1, 1)
    assert "routing_decision" in seen and "request_finished" in seen
