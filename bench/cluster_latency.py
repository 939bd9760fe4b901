"""Shared state on one redis-server against a three-master Redis Cluster: the time of one
acquire+release pair through :class:`OllamaPoolManager` (no Ollama call; loopback only).

``python -m bench.cluster_latency [pairs]`` prints p50 and p99 per backend and how many outages
each run saw (the figures in docs/scale-out.md, "Cluster"). The pool's slot is on a node other
than the seed, as in ``tests/shared_state/test_cluster.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from gleitzeit_llm import OllamaPoolManager
from gleitzeit_llm.state.redis.keys import Keys
from gleitzeit_llm.testing.redis_cluster import LocalRedisCluster
from gleitzeit_llm.testing.redis_server import RedisServer

INSTANCES = [{"id": "a", "url": "http://127.0.0.1:9", "max_concurrent": 1000}]  # never called
NAMESPACE = "bench-cluster"


def measure(shared: dict[str, Any], pairs: int) -> dict[str, float]:
    """p50/p99 (ms) of ``pairs`` acquire+release pairs after a warm-up, and the outages seen."""
    pool = OllamaPoolManager(instances=INSTANCES, shared_state=shared, health_checks=False)
    pool.start()
    try:
        request = pool.route_request("llama3.2")
        for _ in range(200):  # scripts loaded, connections and slot map in place
            pool.finish(pool.try_acquire(request), None)
        times = []
        for _ in range(pairs):
            started = time.perf_counter()
            pool.finish(pool.try_acquire(request), None)
            times.append(time.perf_counter() - started)
        outages = pool.status()["shared_state"]["outages"]
    finally:
        pool.close_sync()
    times.sort()
    return {
        "p50_ms": statistics.median(times) * 1e3,
        "p99_ms": times[int(0.99 * (len(times) - 1))] * 1e3,
        "outages": outages,
    }


def main(argv: list[str]) -> None:
    pairs = int(argv[0]) if argv else 2000
    with RedisServer() as server:
        single = measure({"url": server.url, "namespace": NAMESPACE}, pairs)
    with LocalRedisCluster() as cluster:
        seed = cluster.url_avoiding(Keys(NAMESPACE).channel)
        clustered = measure({"url": seed, "namespace": NAMESPACE, "cluster": True}, pairs)
    for name, result in (("one server", single), ("cluster", clustered)):
        p50, p99, outages = result["p50_ms"], result["p99_ms"], result["outages"]
        print(f"{name:>10}: p50 {p50:.3f} ms  p99 {p99:.3f} ms  outages {outages:g}")


if __name__ == "__main__":
    main(sys.argv[1:])
