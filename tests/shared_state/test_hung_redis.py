"""A Redis that hangs (SIGSTOP: its sockets accept bytes, nothing answers) costs one timeout:
the calls go on on local state, and when it answers again, what it ran late is put right."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gleitzeit_llm import OllamaPoolProvider

from .store_support import MODEL, eventually

HI = [{"role": "user", "content": "hi"}]


async def test_a_hung_redis_costs_one_timeout_and_leaves_no_slot_taken(
    ollama_emulators: Any, redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (emulator,) = ollama_emulators(1, models=[MODEL], loaded=[MODEL], num_parallel=4)
    # Leases live far longer than the test waits: only the release of what the hung server ran
    # late (the acquire it was sent as it stopped) can bring the count back to zero.
    shared = {"url": redis_server.url, "timeout": 0.2, "reconnect_interval": 0.1, "lease_ttl": 60}
    raw = redis.Redis.from_url(redis_server.url, retry=Retry(NoBackoff(), 0))
    caplog.set_level(logging.WARNING, logger="gleitzeit_llm.shared_state")
    async with OllamaPoolProvider(
        instances=[{"id": "a", "url": emulator.url}], shared_state=shared, health_checks=False
    ) as pool:
        await pool.chat(MODEL, HI)
        leases = pool.manager._shared.keys.leases("a")

        redis_server.pause()
        try:
            for _ in range(5):
                answer = await pool.chat(MODEL, HI)
                assert answer.pool.instance_id == "a"
            assert pool.status()["shared_state"]["up"] is False
        finally:
            redis_server.resume()
        warnings = [r for r in caplog.records if r.name == "gleitzeit_llm.shared_state"]
        assert len(warnings) == 1

        eventually(lambda: pool.status()["shared_state"]["up"])
        answer = await pool.chat(MODEL, HI)
        assert answer.pool.instance_id == "a"
        eventually(lambda: raw.zcard(leases) == 0)
        assert pool.status()["instances"]["a"]["active_requests"] == 0
    raw.close()
