"""The scale-out scenario of the benchmark still runs end to end: several application processes,
with and without shared state (it measures nothing here: speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gleitzeit_llm.testing.redis_server import RedisServerUnavailable, find_redis_server

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "runs": 1,
    "processes": 2,
    "instances": 2,
    "max_concurrent": 1,
    "service_time": 0.05,
    "warmup": 0.3,
    "window": 0.5,
    "breaker_threshold": 2,
    "light_every": 0.1,
    "breaker_wait": 1.5,
    "latency_calls": 20,
    "latency_block": 10,
}


def test_quick_scaleout_scenario_reports_both_modes(tmp_path: Path) -> None:
    try:
        find_redis_server()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"scaleout.{key}={json.dumps(value)}")]
    command = [sys.executable, "-m", "bench", "--quick", "--only", "scaleout", *sets]
    done = subprocess.run(
        [*command, "--out", str(tmp_path), "--no-plots", "--no-docs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    (result,) = tmp_path.glob("*-quick-partial.json")
    data = json.loads(result.read_text())
    scaleout = data["scenarios"]["scaleout"]
    assert set(scaleout["by_mode"]) == {"local", "shared"}
    for row in scaleout["by_mode"].values():
        assert row["throughput_rps"]["n"] == 1 and row["peak_concurrency"] >= 1
        assert len(row["breaker_opened_in"]) == 1
    # The servers' own count: shared state holds the cap across the processes.
    assert scaleout["by_mode"]["shared"]["cap_violations"] == 0
    assert scaleout["latency"]["round_trips_per_call"]["median"] is not None
    targets = {t["id"]: t for t in data["targets"]}
    assert targets["shared_cap"]["met"] is True
    assert targets["shared_round_trips"]["measured"] is not None
