"""The benchmark harness still runs end to end (it measures nothing here: speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp_path: Path, docs: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench --quick`` with ``args``, results and docs in ``tmp_path``, no plots."""
    return subprocess.run(
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


def test_quick_bench_writes_results_and_the_docs_table(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n\nHand-written prose stays.\n")
    done = run_bench(
        tmp_path,
        docs,
        "--only",
        "routing,overhead,coldstart",
        "--runs",
        "1",
        "--set",
        'overhead.clients=["httpx", "pool"]',
        "--set",
        "overhead.concurrency=[1, 4]",
        "--set",
        "routing.sizes=[1, 10]",
        "--set",
        "coldstart.requests=24",
        timeout=50,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    (result,) = tmp_path.glob("*-quick-partial.json")
    data = json.loads(result.read_text())
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


def test_quick_gateway_bench_measures_the_gateway_against_direct_calls(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    done = run_bench(
        tmp_path,
        docs,
        "--only",
        "gateway",
        "--runs",
        "1",
        "--set",
        'gateway.clients=["direct", "gateway"]',
        "--set",
        "gateway.litellm=false",
        "--set",
        "gateway.concurrency=[1, 4]",
        "--set",
        'gateway.rounds={"1": 5, "4": 1}',
        "--set",
        'gateway.batch={"1": 1, "4": 8}',
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    (result,) = tmp_path.glob("*-quick-partial.json")
    gateway = json.loads(result.read_text())["scenarios"]["gateway"]
    assert gateway["skipped"] == {}
    assert set(gateway["clients"]) == {"direct", "gateway"}
    pair = gateway["by_concurrency"]["1"]["pairs"]["gateway-vs-direct"]
    assert pair["added_p50_ms"]["n"] == 1 and pair["throughput_ratio"]["n"] == 1
    assert gateway["by_concurrency"]["4"]["clients"]["gateway"]["p50_ms"]["n"] == 1
    targets = {t["id"]: t for t in json.loads(result.read_text())["targets"]}
    assert targets["gateway_latency"]["measured"] is not None
    assert targets["gateway_throughput"]["met"] is None  # concurrency 64 was not run
    assert "### 8. Gateway" in docs.read_text()
