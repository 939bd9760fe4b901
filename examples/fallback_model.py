"""Fallback model: use another model when the requested one is on no instance.

The guide's "Dynamic Instance Selection" task sets ``fallback_model``: if the requested model is
installed nowhere (or fails on every instance that has it), the call runs once more with the
fallback model, and ``pool.fallback_used`` says so.

    .venv/bin/python examples/fallback_model.py
"""

from __future__ import annotations

import asyncio

from _servers import MODEL, servers

from gleitzeit_llm import GleitzeitError, OllamaPoolProvider
from gleitzeit_llm.observability import FallbackEvent, PoolEvent

WANTED = "llama3.3:70b"  # installed on none of the emulated servers


def show_fallback(event: PoolEvent) -> None:
    if isinstance(event, FallbackEvent):
        print(f"  [fallback event] {event.model} -> {event.fallback_model}")


async def main() -> None:
    with servers(2, models=[MODEL]) as instances:
        async with OllamaPoolProvider(instances=instances) as provider:
            provider.events.subscribe(show_fallback)

            # The guide's task params, through the generic entry point.
            result = await provider.execute(
                method="llm/chat",
                params={
                    "model": WANTED,
                    "load_balancing_strategy": "model_affinity",
                    "fallback_model": MODEL,  # use if primary not available
                    "messages": [{"role": "user", "content": "Write a haiku about load balancers"}],
                },
            )
            pool = result["pool"]
            print(
                f"asked for {pool['requested_model']}, answered by {pool['model']} on {pool['instance_id']}"
            )
            print(f"fallback_used: {pool['fallback_used']}")
            print(f"reply: {result['message']['content']}")

            # The typed call takes the same hint as a keyword argument; `.pool` is a PoolInfo.
            reply = await provider.chat(WANTED, [{"role": "user", "content": "Hi"}], fallback_model=MODEL)
            print(f"typed call: fallback_used={reply.pool.fallback_used}, model={reply.pool.model}")

            # Without a fallback the call fails at once: no instance has the model.
            try:
                await provider.chat(WANTED, [{"role": "user", "content": "Hi"}])
            except GleitzeitError as exc:
                print(f"without fallback_model: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    asyncio.run(main())
