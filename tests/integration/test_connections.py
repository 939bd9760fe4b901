"""Building transports and connections: failures are the instance's, timeouts cap what they
promise (name resolution, the total of a call), and ``initialize()`` leaves one warm connection
per instance for the first calls. Against emulators on loopback with real sockets."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gleitzeit_llm import (
    InstanceError,
    InstanceTimeoutError,
    OllamaPoolProvider,
    StreamInterruptedError,
)
from gleitzeit_llm.errors import AllInstancesFailedError
from gleitzeit_llm.ollama import AsyncOllamaTransport, OllamaTransport
from gleitzeit_llm.testing import OllamaEmulator

MESSAGES = [{"role": "user", "content": "hello"}]


def instances(emulators: list[OllamaEmulator], **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"e{i}", "url": e.url, "priority": i, **extra} for i, e in enumerate(emulators)]


def in_flight(pool: OllamaPoolProvider) -> dict[str, int]:
    return {name: s["active_requests"] for name, s in pool.status()["instances"].items()}


# ---------------------------------------------------------------------------------------------
# A transport that cannot be built is that instance's failure


@pytest.fixture
def unbuildable(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """URLs whose transports fail to build, as a CA file that is not PEM makes them fail."""
    bad: set[str] = set()
    for cls in (AsyncOllamaTransport, OllamaTransport):
        original = cls.__init__

        def init(self: Any, url: str, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            if url in bad:
                raise ssl.SSLError(136, "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found")
            __original(self, url, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)
    yield bad


def failover_pool(emulators: list[OllamaEmulator]) -> OllamaPoolProvider:
    # priority: e0 is always tried first, so every call meets the broken transport
    return OllamaPoolProvider(
        instances=instances(emulators),
        load_balancing={"strategy": "priority", "retry_backoff_base": 0.001, "retry_backoff_max": 0.01},
        health_checks=False,
    )


async def test_a_transport_that_cannot_be_built_fails_over_and_releases_its_slot(
    ollama_emulators: Any, unbuildable: set[str]
) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    unbuildable.add(emulators[0].url)
    async with failover_pool(emulators) as pool:
        for _ in range(3):
            result = await pool.chat("llama3.2", MESSAGES)
            assert result.pool.instance_id == "e1" and result.pool.attempts == 2
            assert "InstanceFailedError" in result.pool.errors[0] and "e0" in result.pool.errors[0]
            chunks = [c async for c in pool.stream_chat("llama3.2", MESSAGES)]
            assert chunks[-1].done
        assert in_flight(pool) == {"e0": 0, "e1": 0}


def test_a_transport_that_cannot_be_built_fails_over_sync(
    ollama_emulators: Any, unbuildable: set[str]
) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    unbuildable.add(emulators[0].url)
    with failover_pool(emulators) as pool:
        for _ in range(3):
            assert pool.chat_sync("llama3.2", MESSAGES).pool.instance_id == "e1"
            assert list(pool.stream_chat_sync("llama3.2", MESSAGES))[-1].done
        assert in_flight(pool) == {"e0": 0, "e1": 0}


async def test_a_transport_that_cannot_be_built_alone_raises_our_error(
    ollama_emulators: Any, unbuildable: set[str]
) -> None:
    (emulator,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"])
    unbuildable.add(emulator.url)
    pool = OllamaPoolProvider(
        instances=instances([emulator]), load_balancing={"retry_attempts": 0}, health_checks=False
    )
    async with pool:
        with pytest.raises(InstanceError, match=r"e0.*no certificate"):
            await pool.chat("llama3.2", MESSAGES)
        with pytest.raises(InstanceError):
            await pool.stream_chat("llama3.2", MESSAGES).__anext__()
        assert in_flight(pool) == {"e0": 0}


async def test_initialize_probes_the_others_when_one_transport_cannot_be_built(
    ollama_emulators: Any, unbuildable: set[str]
) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    unbuildable.add(emulators[0].url)
    pool = OllamaPoolProvider(instances=instances(emulators), load_balancing={"health_check_interval": 60})
    async with pool:  # must not raise
        status = pool.status()["instances"]
        assert status["e0"]["state"] == "unhealthy"
        assert status["e1"]["state"] == "healthy"
        assert (await pool.chat("llama3.2", MESSAGES)).pool.instance_id == "e1"
    with pool.__class__(instances=instances(emulators), load_balancing={"health_check_interval": 60}) as sync:
        assert sync.status()["instances"]["e1"]["state"] == "healthy"
        assert sync.status()["instances"]["e0"]["state"] == "unhealthy"


# ---------------------------------------------------------------------------------------------
# timeouts.total caps the whole call


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_stream_stalling_just_before_the_total_deadline_ends_at_the_deadline(
    ollama_emulators: Any, streamed: bool
) -> None:
    # 10 tokens/s: the stall starts about 0.8 s into a call with total=1.0
    (emulator,) = ollama_emulators(
        1, models=["llama3.2"], loaded=["llama3.2"], time_scale=1.0, tokens_per_second=10.0, reply_tokens=20
    )
    emulator.set_faults(hang_after_chunks=8)
    pool = OllamaPoolProvider(
        config={"instances": instances([emulator]), "timeouts": {"total": 1.0, "idle": 30.0}},
        load_balancing={"retry_attempts": 0},
        health_checks=False,
    )
    async with pool:
        started = time.monotonic()
        with pytest.raises(InstanceError) as info:
            if streamed:
                async for _ in pool.stream_chat("llama3.2", MESSAGES):
                    pass
            else:
                await pool.chat("llama3.2", MESSAGES)
        elapsed = time.monotonic() - started
        emulator.clear_faults()
    assert elapsed < 1.5, f"total=1.0 but the call took {elapsed:.2f} s"
    assert getattr(info.value, "phase", None) == "total"


def test_a_sync_stream_stalling_just_before_the_total_deadline_ends_at_the_deadline(
    ollama_emulators: Any,
) -> None:
    (emulator,) = ollama_emulators(
        1, models=["llama3.2"], loaded=["llama3.2"], time_scale=1.0, tokens_per_second=10.0, reply_tokens=20
    )
    emulator.set_faults(hang_after_chunks=8)
    pool = OllamaPoolProvider(
        config={"instances": instances([emulator]), "timeouts": {"total": 1.0, "idle": 30.0}},
        load_balancing={"retry_attempts": 0},
        health_checks=False,
    )
    with pool:
        started = time.monotonic()
        with pytest.raises(InstanceError) as info:
            pool.chat_sync("llama3.2", MESSAGES)
        elapsed = time.monotonic() - started
        emulator.clear_faults()
    assert elapsed < 1.5, f"total=1.0 but the call took {elapsed:.2f} s"
    assert getattr(info.value, "phase", None) == "total"


# ---------------------------------------------------------------------------------------------
# The connect timeout covers name resolution

SLOW_NAME = "slow-dns.gleitzeit.test"


@pytest.fixture
def slow_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """SLOW_NAME resolves to 127.0.0.1 after 3 s (or when released); other names as usual."""
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if (host.decode() if isinstance(host, bytes) else host) == SLOW_NAME:  # anyio passes bytes
            release.wait(3.0)
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield release
    finally:
        release.set()  # lets a lookup still blocked in a helper thread finish


def slow_dns_pool(emulator: OllamaEmulator) -> OllamaPoolProvider:
    return OllamaPoolProvider(
        config={
            "instances": [{"id": "slow", "url": f"http://{SLOW_NAME}:{emulator.port}"}],
            "timeouts": {"connect": 0.5},
        },
        load_balancing={"retry_attempts": 0},
        health_checks=False,
    )


def test_the_connect_timeout_covers_a_hanging_lookup_sync(
    ollama_emulators: Any, slow_dns: threading.Event
) -> None:
    (emulator,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"])
    with slow_dns_pool(emulator) as pool:
        started = time.monotonic()
        with pytest.raises(InstanceTimeoutError) as info:
            pool.chat_sync("llama3.2", MESSAGES)
        elapsed = time.monotonic() - started
    assert info.value.phase == "connect"
    assert elapsed < 2.0, f"connect=0.5 but the call took {elapsed:.2f} s"


async def test_the_connect_timeout_covers_a_hanging_lookup_async(
    ollama_emulators: Any, slow_dns: threading.Event
) -> None:
    (emulator,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"])
    try:
        async with slow_dns_pool(emulator) as pool:
            started = time.monotonic()
            with pytest.raises(InstanceTimeoutError) as info:
                await pool.chat("llama3.2", MESSAGES)
            elapsed = time.monotonic() - started
    finally:
        slow_dns.set()  # the loop's executor thread must finish before the loop closes
    assert info.value.phase == "connect"
    assert elapsed < 2.0, f"connect=0.5 but the call took {elapsed:.2f} s"


def test_a_lookup_that_answers_in_time_connects_sync(
    ollama_emulators: Any, slow_dns: threading.Event
) -> None:
    (emulator,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"])
    slow_dns.set()  # answers at once
    with slow_dns_pool(emulator) as pool:
        assert pool.chat_sync("llama3.2", MESSAGES).done


# ---------------------------------------------------------------------------------------------
# A stream that stalls after output was seen


def stall_pool(emulators: list[OllamaEmulator], **lb: Any) -> OllamaPoolProvider:
    return OllamaPoolProvider(
        config={"instances": instances(emulators), "timeouts": {"idle": 0.3}},
        load_balancing={"strategy": "priority", "retry_backoff_base": 0.001, "retry_backoff_max": 0.01, **lb},
        health_checks=False,
    )


async def test_a_stream_stalling_after_its_first_chunk_is_interrupted_and_delivered(
    ollama_emulators: Any,
) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    emulators[0].set_faults(hang_after_chunks=2)
    async with stall_pool(emulators) as pool:
        seen = []
        with pytest.raises(StreamInterruptedError) as info:
            async for chunk in pool.stream_chat("llama3.2", MESSAGES):
                seen.append(chunk)
        emulators[0].clear_faults()
        assert in_flight(pool) == {"e0": 0, "e1": 0}
    assert len(seen) == 2
    error = info.value
    assert error.delivered is True and error.phase == "idle" and error.instance == "e0"
    assert isinstance(error.__cause__, InstanceTimeoutError)
    assert not emulators[1].requests_for("/api/chat")  # nothing replayed elsewhere


def test_a_sync_stream_stalling_after_its_first_chunk_is_interrupted_and_delivered(
    ollama_emulators: Any,
) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    emulators[0].set_faults(hang_after_chunks=2)
    with stall_pool(emulators) as pool:
        seen = []
        with pytest.raises(StreamInterruptedError) as info:
            for chunk in pool.stream_chat_sync("llama3.2", MESSAGES):
                seen.append(chunk)
        emulators[0].clear_faults()
    assert len(seen) == 2
    assert info.value.delivered is True and info.value.phase == "idle"


async def test_a_one_shot_call_stalling_mid_answer_still_fails_over(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    emulators[0].set_faults(hang_after_chunks=2)
    async with stall_pool(emulators) as pool:
        result = await pool.chat("llama3.2", MESSAGES)
        emulators[0].clear_faults()
        assert result.pool.instance_id == "e1" and result.pool.attempts == 2
        assert result.message.content


def test_a_one_shot_call_stalling_mid_answer_is_an_instance_error_sync(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    with stall_pool(emulators, retry_attempts=0) as pool:
        emulators[0].set_faults(hang_after_chunks=2)
        with pytest.raises((InstanceError, AllInstancesFailedError)):
            pool.chat_sync("llama3.2", MESSAGES)
        emulators[0].clear_faults()


# ---------------------------------------------------------------------------------------------
# Cold start: initialize() leaves one warm connection per instance


async def test_initialize_leaves_one_warm_connection_that_the_first_calls_reuse(
    ollama_emulators: Any,
) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    pool = OllamaPoolProvider(
        instances=[{"id": f"e{i}", "url": e.url, "tags": [f"t{i}"]} for i, e in enumerate(emulators)],
        load_balancing={"health_check_interval": 60},
    )
    async with pool:
        assert [e.connections_accepted for e in emulators] == [1, 1]
        for i in range(2):
            assert (
                await pool.chat("llama3.2", MESSAGES, instance_tags=[f"t{i}"])
            ).pool.instance_id == f"e{i}"
        assert [e.connections_accepted for e in emulators] == [1, 1]


def test_initialize_sync_leaves_one_warm_connection_that_the_first_calls_reuse(
    ollama_emulators: Any,
) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"])
    pool = OllamaPoolProvider(
        instances=[{"id": f"e{i}", "url": e.url, "tags": [f"t{i}"]} for i, e in enumerate(emulators)],
        load_balancing={"health_check_interval": 60},
    )
    with pool:
        assert [e.connections_accepted for e in emulators] == [1, 1]
        for i in range(2):
            assert pool.chat_sync("llama3.2", MESSAGES, instance_tags=[f"t{i}"]).pool.instance_id == f"e{i}"
        assert [e.connections_accepted for e in emulators] == [1, 1]


async def test_initialize_on_a_second_event_loop_warms_that_loop(ollama_emulators: Any) -> None:
    (emulator,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"])
    pool = OllamaPoolProvider(instances=[emulator.url], load_balancing={"health_check_interval": 60})
    await pool.initialize()
    assert emulator.connections_accepted == 1

    def other_loop() -> None:
        async def run() -> None:
            await pool.initialize()
            await pool.chat("llama3.2", MESSAGES)

        asyncio.run(run())

    await asyncio.to_thread(other_loop)
    assert emulator.connections_accepted == 2  # one per event loop, none per call
    await pool.chat("llama3.2", MESSAGES)
    assert emulator.connections_accepted == 2
    await pool.close()


def test_no_ssl_context_is_built_for_http_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from gleitzeit_llm import connections

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an SSL context was built for an http:// URL")

    pool = OllamaPoolProvider(instances=["http://127.0.0.1:9", "http://127.0.0.1:10"], health_checks=False)
    monkeypatch.setattr(ssl, "create_default_context", refuse)
    monkeypatch.setattr(ssl, "SSLContext", refuse)
    try:
        for inst in pool.manager.instances:
            connections.sync_transport(inst, pool._timeouts).close()
            asyncio.run(connections.async_transport(inst, pool._timeouts).aclose())
            asyncio.run(
                connections.probe_transport(inst.id, inst.connect_url, {}, (True, None, None), 1.0).aclose()
            )
    finally:
        monkeypatch.undo()
        pool.close_sync()


# ---------------------------------------------------------------------------------------------
# An instance re-added under another URL: the old connections are closed, not dropped


def _readd_elsewhere(pool: OllamaPoolProvider, new_url: str) -> None:
    pool.manager.remove_instance("e0")
    pool.manager.add_instance({"id": "e0", "url": new_url})


def test_a_sync_transport_replaced_by_a_new_url_is_closed(ollama_emulators: Any) -> None:
    old, new = ollama_emulators(2)
    pool = OllamaPoolProvider(instances=[{"id": "e0", "url": old.url}], health_checks=False)
    with pool:
        pool.chat_sync(model="llama3.2", messages=MESSAGES)
        _readd_elsewhere(pool, new.url)
        pool.chat_sync(model="llama3.2", messages=MESSAGES)
        # The old server sees its connection closed at once, not when the provider closes.
        old.wait_for(lambda: old.open_connections == 0, timeout=5)
        assert new.open_connections == 1


async def test_an_async_transport_replaced_by_a_new_url_is_closed(ollama_emulators: Any) -> None:
    old, new = ollama_emulators(2)
    pool = OllamaPoolProvider(instances=[{"id": "e0", "url": old.url}], health_checks=False)
    async with pool:
        await pool.chat(model="llama3.2", messages=MESSAGES)
        _readd_elsewhere(pool, new.url)
        await pool.chat(model="llama3.2", messages=MESSAGES)
        await asyncio.to_thread(old.wait_for, lambda: old.open_connections == 0, 5)
        assert new.open_connections == 1


def test_a_stream_still_reading_from_the_old_url_is_not_cut(ollama_emulators: Any) -> None:
    old, new = ollama_emulators(2)
    pool = OllamaPoolProvider(instances=[{"id": "e0", "url": old.url}], health_checks=False)
    with pool:
        with pool.stream_chat_sync(
            model="llama3.2", messages=MESSAGES, options={"num_predict": 20}
        ) as stream:
            first = next(stream)
            _readd_elsewhere(pool, new.url)
            pool.chat_sync(model="llama3.2", messages=MESSAGES)  # builds the new URL's transport
            rest = list(stream)
        assert first.message.content and rest[-1].done
        assert old.open_connections == 1  # retired, not cut: closed with the provider
    old.wait_for(lambda: old.open_connections == 0, timeout=5)
