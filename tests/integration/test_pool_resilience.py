"""Failover, breakers, health and slot accounting against emulated servers that really fail:
listeners closed mid-run, connections reset, hung responses, error lines, 503 storms."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

from gleitzeit_llm import InstanceFailedError, OllamaPoolProvider, StreamInterruptedError
from gleitzeit_llm.observability.events import BreakerStateChanged, FailoverEvent, HealthStateChanged
from gleitzeit_llm.testing import OllamaEmulator

MESSAGES = [{"role": "user", "content": "hello"}]


def provider(emulators: list[OllamaEmulator], **lb: Any) -> OllamaPoolProvider:
    instances = [{"id": f"e{i}", "url": e.url, "max_concurrent": 4} for i, e in enumerate(emulators)]
    settings = {
        "health_check_interval": 0.2,
        "health_check_timeout": 0.5,
        "retry_backoff_base": 0.001,
        "retry_backoff_max": 0.01,
        "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 0.5},
        **lb,
    }
    return OllamaPoolProvider(instances=instances, load_balancing=settings)


async def test_stopping_an_instance_mid_run_fails_no_request_and_it_comes_back(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(3, models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, time_scale=0.02)
    victim = emulators[1]
    events: list[Any] = []
    async with provider(emulators) as pool:
        pool.events.subscribe(events.append)
        done = 0
        stopped = asyncio.Event()

        async def one() -> str:
            nonlocal done
            result = await pool.chat("llama3.2", MESSAGES)
            done += 1
            if done == 30 and not stopped.is_set():
                stopped.set()
                await asyncio.to_thread(victim.stop)
            return result.pool.instance_id

        gate = asyncio.Semaphore(16)

        async def bounded() -> str:
            async with gate:
                return await one()

        served = await asyncio.gather(*(bounded() for _ in range(200)))  # raises if any failed
        assert len(served) == 200
        assert any(isinstance(e, FailoverEvent) and e.from_instance == "e1" for e in events)
        status = pool.status()["instances"]["e1"]
        assert status["state"] == "unhealthy"
        assert any(
            isinstance(e, BreakerStateChanged) and e.instance == "e1" and e.new == "open" for e in events
        )
        assert status["active_requests"] == 0

        # Back: restart on the same port; it must serve again within recovery_timeout + one interval.
        await asyncio.to_thread(victim.start)
        restarted = time.monotonic()
        before = len(victim.requests_for("/api/chat"))
        while len(victim.requests_for("/api/chat")) == before or not _served_ok(victim, before):
            assert time.monotonic() - restarted < 0.5 + 0.2 + 2.0, "instance did not come back"
            await asyncio.gather(*(pool.chat("llama3.2", MESSAGES) for _ in range(6)))
        assert any(
            isinstance(e, HealthStateChanged) and e.instance == "e1" and e.old == "unhealthy" for e in events
        )


def _served_ok(emulator: OllamaEmulator, after: int) -> bool:
    return any(r.status == 200 for r in emulator.requests_for("/api/chat")[after:])


async def test_a_retry_never_returns_to_an_instance_already_tried(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(4, models=["llama3.2"], time_scale=0)
    for emulator in emulators[:3]:
        emulator.set_faults(error_rate=1.0)
    async with provider(
        emulators, strategy="round_robin", circuit_breaker={"failure_threshold": 100}
    ) as pool:
        for _ in range(8):
            result = await pool.chat("llama3.2", MESSAGES)
            assert result.pool.instance_id == "e3"
    # every failed attempt went to a different instance within its call
    assert all(len(e.requests_for("/api/chat")) <= 8 for e in emulators[:3])
    assert len(emulators[3].requests_for("/api/chat")) == 8


async def test_a_busy_instance_is_skipped_not_blamed(ollama_emulators: Any) -> None:
    busy, free = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    busy.set_faults(busy=True)
    async with provider([busy, free], strategy="round_robin") as pool:
        results = [await pool.chat("llama3.2", MESSAGES) for _ in range(6)]
        info = pool.status()["instances"]["e0"]
    assert all(r.pool.instance_id == "e1" for r in results)
    assert info["circuit_breaker_open"] is False
    assert info["busy_rejections"] >= 1
    assert info["failed_requests"] == 0


async def test_streams_fail_over_before_the_first_chunk_unnoticed(ollama_emulators: Any) -> None:
    broken, good = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    broken.set_faults(drop_after_chunks=0)
    async with provider([broken, good], strategy="round_robin") as pool:
        for _ in range(4):
            stream = pool.stream_chat("llama3.2", MESSAGES)
            text = "".join([chunk.message.content async for chunk in stream])
            assert text
            assert stream.pool.instance_id == "e1"


async def test_a_stream_that_breaks_after_output_raises_and_releases(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], time_scale=0)
    emu.set_faults(error_after_chunks=2)
    async with provider([emu], retry_same_instance=True) as pool:  # a pool of one retries when asked (#14)
        seen = []
        with pytest.raises(StreamInterruptedError, match="error was encountered"):
            async for chunk in pool.stream_chat("llama3.2", MESSAGES):
                seen.append(chunk)
        assert len(seen) == 2  # nothing delivered twice, nothing replayed
        assert pool.status()["active_requests"] == 0
        # a one-shot call that breaks the same way is retried: the caller saw nothing yet
        emu.set_faults(error_after_chunks=None, fail_next=1)
        assert (await pool.chat("llama3.2", MESSAGES)).pool.attempts == 2


async def test_hung_instance_times_out_and_fails_over(ollama_emulators: Any) -> None:
    hung, good = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    hung.set_faults(hang=True)
    instances = [{"id": "hung", "url": hung.url}, {"id": "good", "url": good.url}]
    config = {
        "instances": instances,
        "load_balancing": {"strategy": "round_robin", "retry_backoff_base": 0.001},
        "timeouts": {"first_byte": 0.2},
    }
    async with OllamaPoolProvider(config=config) as pool:
        result = await pool.chat("llama3.2", MESSAGES)
        assert result.pool.instance_id == "good"
        assert "InstanceTimeoutError" in result.pool.errors[0]
    hung.clear_faults()


async def test_100_cancelled_streams_leave_every_count_at_zero(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], num_parallel=8, time_scale=0.05, reply_tokens=200)
    async with provider(emulators) as pool:
        streaming = asyncio.Event()

        async def consume_one_chunk() -> None:
            async with pool.stream_chat("llama3.2", MESSAGES) as stream:
                async for _ in stream:
                    streaming.set()
                    await asyncio.sleep(10)  # parked mid-stream until cancelled

        tasks = [asyncio.ensure_future(consume_one_chunk()) for _ in range(100)]
        await streaming.wait()  # streams are open; the rest wait for slots or are in flight
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        status = pool.status()
        assert status["active_requests"] == 0
        assert all(i["active_by_model"] == {} for i in status["instances"].values())
        assert status["waiting_requests"] == 0
        # cancellations are nobody's failure
        assert all(
            i["failed_requests"] == 0 and not i["circuit_breaker_open"] for i in status["instances"].values()
        )
    for emulator in emulators:
        emulator.wait_for(lambda e=emulator: e.in_flight() == 0)


async def test_breaking_out_of_a_stream_releases_its_slot(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], time_scale=0.01, reply_tokens=50)
    async with provider([emu]) as pool:
        async with pool.stream_chat("llama3.2", MESSAGES) as stream:
            async for _ in stream:
                break
        assert pool.status()["active_requests"] == 0
        assert pool.status()["instances"]["e0"]["failed_requests"] == 0


def test_one_provider_serves_sync_async_threads_and_successive_loops(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(2, models=["llama3.2", "nomic-embed-text"], time_scale=0)
    pool = provider(emulators)
    try:
        assert pool.chat_sync("llama3.2", MESSAGES).message.content

        async def from_a_loop() -> str:
            reply = await pool.chat("llama3.2", MESSAGES)
            vectors = await pool.embed("nomic-embed-text", ["a", "b"])
            assert len(vectors.embeddings) == 2
            return reply.pool.instance_id

        asyncio.run(from_a_loop())
        asyncio.run(from_a_loop())  # a second event loop after the first one closed

        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(10):
                    pool.chat_sync("llama3.2", MESSAGES)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        status = pool.status()
        assert sum(i["total_requests"] for i in status["instances"].values()) == 1 + 4 + 40
        assert status["active_requests"] == 0
    finally:
        pool.close_sync()


async def test_instances_added_and_removed_under_load(ollama_emulators: Any) -> None:
    first, second, third = ollama_emulators(3, models=["llama3.2"], num_parallel=8, time_scale=0.01)
    async with provider([first, second]) as pool:
        timeline: list[tuple[str, str]] = []
        pool.events.subscribe(lambda e: timeline.append((e.kind, getattr(e, "instance", ""))))

        async def churn() -> None:
            await asyncio.sleep(0.05)
            pool.manager.add_instance({"id": "e2", "url": third.url, "max_concurrent": 4})
            await asyncio.sleep(0.05)
            pool.manager.remove_instance("e0")

        async def load() -> list[str]:
            gate = asyncio.Semaphore(12)

            async def one() -> str:
                async with gate:
                    return (await pool.chat("llama3.2", MESSAGES)).pool.instance_id

            return await asyncio.gather(*(one() for _ in range(300)))

        served, _ = await asyncio.gather(load(), churn())
        assert len(served) == 300  # nothing lost
        assert Counter(served)["e2"] > 0
        removed = timeline.index(("instance_removed", "e0"))
        assert ("routing_decision", "e0") not in timeline[removed:]  # nothing routed there after
        assert "e0" not in pool.status()["instances"]  # drained, then dropped


async def test_failed_instances_do_not_count_caller_errors(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["nomic-embed-text"], time_scale=0)
    async with provider([emu]) as pool:
        for _ in range(5):
            with pytest.raises(Exception, match="does not support chat"):
                await pool.chat("nomic-embed-text", MESSAGES)
        info = pool.status()["instances"]["e0"]
    assert info["failed_requests"] == 0
    assert info["circuit_breaker_open"] is False
    assert len(emu.requests_for("/api/chat")) == 5  # one attempt each: never retried


async def test_every_instance_down_fails_with_the_pools_error(ollama_emulators: Any) -> None:
    emulators = ollama_emulators(2, models=["llama3.2"], time_scale=0)
    async with provider(emulators) as pool:
        for emulator in emulators:
            emulator.stop()
        with pytest.raises(Exception) as caught:
            await pool.chat("llama3.2", MESSAGES)
        assert isinstance(caught.value.__cause__, InstanceFailedError) or "failed" in str(caught.value)
        assert pool.status()["active_requests"] == 0


async def test_a_server_process_killed_with_sigkill_mid_run_fails_no_request() -> None:
    from gleitzeit_llm.testing import EmulatorProcess

    with (
        EmulatorProcess(models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, time_scale=0.02) as first,
        EmulatorProcess(models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, time_scale=0.02) as second,
    ):
        async with provider([first, second]) as pool:  # type: ignore[list-item]
            done = 0

            async def one() -> str:
                nonlocal done
                result = await pool.chat("llama3.2", MESSAGES)
                done += 1
                if done == 20:
                    first.kill()  # a real process death: SIGKILL, sockets reset by the kernel
                return result.pool.instance_id

            gate = asyncio.Semaphore(8)

            async def bounded() -> str:
                async with gate:
                    return await one()

            served = await asyncio.gather(*(bounded() for _ in range(100)))
            assert len(served) == 100
            assert Counter(served[-30:]) == {"e1": 30}  # the dead one no longer serves
            assert pool.status()["instances"]["e0"]["state"] == "unhealthy"
            assert not first.alive


async def test_a_retry_does_not_go_through_an_open_breaker_while_a_healthy_instance_exists(
    ollama_emulators: Any,
) -> None:
    # a is healthy and answers one transient 500; b hangs and its breaker is open. The retry must
    # go back to a, not wait out b's first-byte timeout ("panic" is for a pool with nothing routable).
    a, b = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"], time_scale=0.0)
    b.set_faults(hang=True)
    instances = [{"id": "a", "url": a.url}, {"id": "b", "url": b.url}]
    pool = OllamaPoolProvider(
        config={
            "instances": instances,
            "load_balancing": {"retry_backoff_base": 0.001, "retry_backoff_max": 0.01},
            "timeouts": {"first_byte": 5.0},
        },
        health_checks=False,
    )
    async with pool:
        breaker = pool.manager.get("b").breaker
        while not breaker.is_open:
            breaker.record_failure()
        a.set_faults(fail_next=1)
        started = time.monotonic()
        reply = await pool.chat("llama3.2", MESSAGES)
        assert reply.pool.instance_id == "a" and reply.pool.attempts == 2
        assert b.requests_for("/api/chat") == []
        assert time.monotonic() - started < 4  # b's hang would have cost the 5 s first-byte timeout


async def test_a_429_with_a_day_long_retry_after_takes_the_instance_out_for_the_cap_only(
    ollama_emulators: Any,
) -> None:
    a, b = ollama_emulators(2, models=["llama3.2"], loaded=["llama3.2"], time_scale=0.0)
    a.set_faults(busy=True, busy_status=429, busy_retry_after=86400)
    instances = [{"id": "a", "url": a.url}, {"id": "b", "url": b.url}]
    settings = {"strategy": "round_robin", "max_retry_after": 30, "retry_backoff_base": 0.001}
    async with OllamaPoolProvider(instances=instances, load_balancing=settings, health_checks=False) as pool:
        reply = await pool.chat("llama3.2", MESSAGES)  # round robin starts at a: 429, then b
        assert reply.pool.instance_id == "b" and reply.pool.attempts == 2
        info = pool.status()["instances"]["a"]
        assert info["state"] != "unhealthy" and info["active_requests"] == 0
        assert 0 < info["busy_for"] <= 30
        assert "HTTP 429" in info["unavailable_reason"] and "86400" in info["unavailable_reason"]
