"""The benchmark harness still runs end to end (it measures nothing here: speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quick_bench(tmp_path: Path, docs: Path, args: list[str], timeout: float) -> dict:
    """``python -m bench --quick ARGS`` into ``tmp_path`` and ``docs``; the results it wrote."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            *args,
            "--out",
            str(tmp_path),
            "--docs",
            str(docs),
            "--no-plots",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = tmp_path.glob("*-quick-partial.json")
    return json.loads(result.read_text())


def test_quick_bench_writes_results_and_the_docs_table(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n\nHand-written prose stays.\n")
    args = ["--only", "routing,overhead,coldstart", "--runs", "1"]
    args += ["--set", 'overhead.clients=["httpx", "pool"]', "--set", "overhead.concurrency=[1, 4]"]
    args += ["--set", "routing.sizes=[1, 10]", "--set", "coldstart.requests=24"]
    data = quick_bench(tmp_path, docs, args, timeout=50)
    assert {"schema", "mode", "machine", "scenarios", "runs", "targets", "duration_s"} <= set(data)
    assert {"cores", "python", "loadavg_before", "loadavg_after"} <= set(data["machine"])
    assert set(data["scenarios"]) == {"routing", "overhead", "coldstart"}

    overhead = data["scenarios"]["overhead"]["by_concurrency"]
    assert set(overhead) == {"1", "4"}
    pair = overhead["1"]["pairs"]["pool-vs-httpx"]
    assert {"added_p50_ms", "added_p99_ms", "throughput_ratio", "added_cpu_us"} <= set(pair)
    assert pair["added_p50_ms"]["n"] == 1
    assert set(data["scenarios"]["routing"]["by_instances"]) == {"1", "10"}

    targets = {t["id"]: t for t in data["targets"]}
    assert targets["added_latency"]["measured"] is not None
    assert targets["memory"]["met"] is None  # not measured in this run
    cold = data["scenarios"]["coldstart"]["by_strategy"]
    assert {"round_robin", "latency_based"} <= set(cold)
    for row in cold.values():  # every call counted, the slow instance's share reported
        assert sum(v["median"] for v in row["served"].values()) + row["failed"] == 24
        assert row["slow_served"]["n"] == 1
    assert targets["coldstart"]["measured"] is not None

    page = docs.read_text()
    assert page.startswith("# Performance\n\nHand-written prose stays.")
    assert "bench:results:begin" in page and "### Targets" in page and "### 1. Overhead" in page
    assert "### 3b. Cold start" in page


def test_quick_concurrency_scenario_compares_fixed_and_adaptive_limits(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n")
    args = ["--only", "concurrency", "--set", "concurrency.requests=60", "--set", "concurrency.warmup=0.2"]
    # faster calls: this checks the harness, not the figures
    args += ["--set", "concurrency.ttft=0.05", "--set", "concurrency.tokens_per_second=200"]
    data = quick_bench(tmp_path, docs, args, timeout=60)
    row = data["scenarios"]["concurrency"]["by_strategy"]["least_loaded"]
    assert {"fixed", "adaptive", "p99_ratio", "p50_ratio"} <= set(row)
    assert row["fixed"]["failed"] == row["adaptive"]["failed"] == 0
    assert set(row["adaptive"]["limits"]) == {"np1", "np2", "np4"}  # what it learned, per instance
    assert "### 3c. Learned concurrency" in docs.read_text()
