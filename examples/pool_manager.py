"""Advanced Usage: the OllamaPoolManager on its own, doing the HTTP requests yourself.

The manager picks instances and keeps their health, breakers and metrics; it sends nothing
itself. ``get_instance()`` reserves a slot and returns a URL; you talk to that URL with any HTTP
client and report back with ``record_success()`` / ``record_failure()``, which free the slot.
``async with pool.lease(...)`` does the reporting for you and is the safer form.

    .venv/bin/python examples/pool_manager.py
"""

from __future__ import annotations

import asyncio
import time

import httpx
from _servers import MODEL, servers

from gleitzeit_llm import OllamaPoolManager


async def ask(client: httpx.AsyncClient, url: str, model: str, question: str) -> str:
    """One plain Ollama request: POST /api/chat without streaming."""
    response = await client.post(
        f"{url}/api/chat",
        json={"model": model, "messages": [{"role": "user", "content": question}], "stream": False},
    )
    response.raise_for_status()
    return response.json()["message"]["content"]


async def main() -> None:
    with servers(
        [
            {"id": "gpu-1", "models": ["llama3.2", "llama3.2:70b"], "tags": ["gpu"]},
            {"id": "cpu-1", "models": ["llama3.2"], "tags": ["cpu"]},
        ]
    ) as instances:
        # The guide asks for the 70b model on a GPU instance; real servers may have neither.
        big, gpu = ("llama3.2:70b", ["gpu"]) if instances.emulated else (MODEL, None)

        # Direct pool manager usage
        pool = OllamaPoolManager(
            instances=instances,
            health_check_interval=30,
            circuit_breaker_config={"failure_threshold": 5, "recovery_timeout": 60},
        )
        await pool.initialize()  # health checks start; every instance is probed once
        try:
            await use(pool, big, gpu)
        finally:
            await pool.close()  # stops the health checks


async def use(pool: OllamaPoolManager, big: str, gpu: list[str] | None) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        # Get a specific instance: this reserves one of its max_concurrent slots.
        url = await pool.get_instance(model=big, strategy="model_affinity", tags=gpu, require_healthy=True)
        print(f"get_instance({big!r}, tags={gpu}) -> {url}")

        # Execute the request, then record what happened (this frees the slot again).
        started = time.perf_counter()
        try:
            answer = await ask(http, url, big, "Summarize the theory of relativity")
        except Exception as exc:  # any failure must be recorded, or the slot stays taken
            await pool.record_failure(url, exc)
            raise
        await pool.record_success(url, response_time=time.perf_counter() - started)
        print(f"  answer: {answer}")

        # The safe form: the slot is released and the outcome counted even if the block raises.
        for question in ("What is a load balancer?", "What is a circuit breaker?"):
            async with pool.lease(model=MODEL) as lease:
                answer = await ask(http, lease.url, MODEL, question)
            print(f"lease -> {lease.instance_id}: {answer}")

    # Get pool status
    status = await pool.get_pool_status()
    print(f"Healthy instances: {status['healthy_instances']}/{status['total_instances']}")
    for instance_id, info in status["instances"].items():
        print(
            f"  {instance_id}: {info['state']}, {info['total_requests']} request(s), "
            f"avg {info['avg_response_time'] * 1000:.0f} ms, loaded {info['models_loaded']}"
        )


if __name__ == "__main__":
    asyncio.run(main())
