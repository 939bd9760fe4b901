"""The health monitor's rounds on its own loop: one at a time, so a round that stops probing a
removed instance never closes a transport that another round is still probing through."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from gleitzeit_llm.routing import health
from gleitzeit_llm.routing.health import HealthMonitor, ProbeResult, ProbeTarget


def test_a_round_never_closes_a_transport_another_round_is_still_probing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # httpcore answers a request still running in a pool closed under it by opening a new
    # connection there that nothing closes: a ResourceWarning when the pool is collected.
    probing, release = threading.Event(), threading.Event()
    closed_under_probe: list[bool] = []

    async def probe(instance_id: str, transport: Any, timeouts: Any = None) -> ProbeResult:
        if instance_id == "a" and not probing.is_set():
            probing.set()
            await asyncio.to_thread(release.wait, 10)  # the monitor's loop stays free meanwhile
            closed_under_probe.append(transport._client.is_closed)
        return ProbeResult(instance_id, ok=True)

    monkeypatch.setattr(health, "probe_instance", probe)
    targets = [ProbeTarget("a", "http://127.0.0.1:9", {}), ProbeTarget("b", "http://127.0.0.1:9", {})]
    monitor = HealthMonitor(lambda: list(targets), lambda result: None, interval=3600, timeout=5)
    monitor.start()
    try:
        monitor.request_round()  # a residency change asks for a round: it is probing "a"
        assert probing.wait(5)
        del targets[0]  # "a" is removed; the next round stops probing it and closes its transport
        second = threading.Thread(target=monitor.check_now)
        second.start()
        time.sleep(0.2)  # time enough for a second round running alongside to close "a"
        release.set()
        second.join(10)
        assert not second.is_alive()
    finally:
        release.set()
        monitor.stop()
    assert closed_under_probe == [False]
    assert monitor.rounds == 2
