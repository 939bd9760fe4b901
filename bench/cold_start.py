"""Cold start: what the first call to each instance of a fresh pool costs.

Starts N emulators (answers in a few ms), opens a fresh provider, times ``await initialize()``,
then one chat call pinned to each instance (``instance_tags``) and a second round of the same
calls. The first round pays whatever was left undone by ``initialize()`` (building the
transport, its SSL context, the first TCP connection); the second round is the warm baseline.

    python -m bench.cold_start --instances 3 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator

MESSAGES = [{"role": "user", "content": "hi"}]


async def one_pool(emulators: list[OllamaEmulator]) -> tuple[float, list[float], list[float]]:
    instances = [
        {"id": f"e{i}", "url": e.url, "tags": [f"t{i}"], "models": ["llama3.2"]}
        for i, e in enumerate(emulators)
    ]
    pool = OllamaPoolProvider(instances=instances, load_balancing={"health_check_interval": 60})
    started = time.perf_counter()
    await pool.initialize()
    init = time.perf_counter() - started
    rounds: list[list[float]] = []
    for _ in range(2):
        times = []
        for i in range(len(emulators)):
            t0 = time.perf_counter()
            await pool.chat("llama3.2", MESSAGES, instance_tags=[f"t{i}"])
            times.append(time.perf_counter() - t0)
        rounds.append(times)
    await pool.close()
    return init, rounds[0], rounds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    emulators = [
        OllamaEmulator(models=["llama3.2"], loaded=["llama3.2"], time_scale=0.001).start()
        for _ in range(args.instances)
    ]
    try:
        inits, firsts, warms = [], [], []
        for _ in range(args.repeat):
            init, first, warm = asyncio.run(one_pool(emulators))
            inits.append(init)
            firsts.extend(first)
            warms.extend(warm)
        ms = lambda xs: f"median {statistics.median(xs) * 1000:6.2f} ms  max {max(xs) * 1000:6.2f} ms"  # noqa: E731
        print(f"{args.instances} instances, {args.repeat} fresh pools")
        print(f"initialize()             {ms(inits)}")
        print(f"first call per instance  {ms(firsts)}")
        print(f"second call per instance {ms(warms)}")
    finally:
        for emulator in emulators:
            emulator.close()


if __name__ == "__main__":
    main()
