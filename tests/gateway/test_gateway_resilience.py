"""An Ollama server process killed (SIGKILL) under load behind the gateway: no client sees it."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from gleitzeit_llm.testing import EmulatorProcess

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}


async def test_a_server_killed_under_load_fails_no_request(start_gateway: Any) -> None:
    with (
        EmulatorProcess(models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, time_scale=0.02) as first,
        EmulatorProcess(models=["llama3.2"], loaded=["llama3.2"], num_parallel=8, time_scale=0.02) as second,
    ):
        server = start_gateway([{"id": "first", "url": first.url}, {"id": "second", "url": second.url}])
        done = 0
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

            async def one() -> tuple[int, str]:
                nonlocal done
                # Whole answers: nothing reaches the client before the end, so even a generation
                # cut half-way fails over (a stream can only do that before its first chunk).
                answer = await http.post("/api/chat", json=CHAT)
                assert answer.status_code == 200, answer.text
                assert '"error"' not in answer.text
                done += 1
                if done == 20:
                    first.kill()  # a real process death: SIGKILL, sockets reset by the kernel
                return answer.status_code, answer.headers["x-gleitzeit-instance"]

            gate = asyncio.Semaphore(8)

            async def bounded() -> tuple[int, str]:
                async with gate:
                    return await one()

            results = await asyncio.gather(*(bounded() for _ in range(100)))
    assert [status for status, _ in results] == [200] * 100
    assert Counter(instance for _, instance in results[-30:]) == {"second": 30}
    assert not first.alive
    assert sum(inst.in_flight for inst in server.provider.manager.instances) == 0
