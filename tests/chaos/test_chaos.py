"""The short chaos profile: a seeded mixed workload through the core and both adapters while the
emulated servers misbehave; the invariants of issue 8 checked at the end."""

from __future__ import annotations

import pytest
from chaos_workload import run_chaos


@pytest.mark.timeout(180)
@pytest.mark.parametrize("seed", [1, 2])
def test_chaos_keeps_every_invariant(seed: int) -> None:
    report = run_chaos(seed, calls=240, concurrency=8)
    print(report.summary())
    assert report.calls >= 240
    assert sum(report.faults.values()) >= 5, "the run injected too few faults to mean anything"
    # each call either succeeded or raised one of our classified errors
    assert report.unclassified == []
    assert report.succeeded + sum(report.classified.values()) == report.by_face.total()
    # no stream delivered a token twice or out of order
    assert report.duplicates == []
    # no "Task exception was never retrieved" or other loop errors
    assert report.loop_errors == []
    status = report.final_status
    # every in-flight count is back to 0
    assert status["active_requests"] == 0 and status["waiting_requests"] == 0
    assert all(i["active_requests"] == 0 and i["active_by_model"] == {} for i in status["instances"].values())
    # breakers and health agree with the servers, which are all up and well at the end
    assert all(
        i["state"] == "healthy" and not i["circuit_breaker_open"] for i in status["instances"].values()
    )
    # and the pool closes cleanly within a second
    assert report.close_seconds < 1.0
