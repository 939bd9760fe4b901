"""The benchmark harness still runs end to end (it measures nothing here: speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench ARGS`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
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
        [
            "--quick",
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
            "--out",
            str(tmp_path),
            "--docs",
            str(docs),
            "--no-plots",
        ],
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


def test_quick_promptcache_scenario_reports_every_strategy_and_its_targets(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n")
    small = {
        "strategies": '["least_loaded", "cache_aware"]',
        "instances": "2",
        "conversations": "3",
        "turns": "2",
        "context_tokens": "300",
        "skew_calls": "6",
        "skew_contexts": "2",
        "time_scale": "0.01",
    }
    sets = [arg for key, value in small.items() for arg in ("--set", f"promptcache.{key}={value}")]
    out = ["--out", str(tmp_path), "--docs", str(docs), "--no-plots"]
    done = run_bench(["--quick", "--only", "promptcache", *sets, *out], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = tmp_path.glob("*-quick-partial.json")
    data = json.loads(result.read_text())
    block = data["scenarios"]["promptcache"]
    for part in ("chat", "skew"):
        assert set(block[part]) == {"least_loaded", "cache_aware"}
        for row in block[part].values():
            assert row["failed"] == 0 and row["hit_rate"]["n"] == 1
    assert block["chat"]["least_loaded"]["calls"] == 3 * 2
    targets = {t["id"]: t for t in data["targets"]}
    assert targets["cache_ttft"]["measured"] is not None
    assert targets["cache_skew"]["measured"] is not None
    assert "### 4b. Prompt-cache affinity" in docs.read_text()


def test_quick_gateway_bench_measures_the_gateway_against_direct_calls(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    sets = {
        "clients": '["direct", "gateway"]',
        "litellm": "false",
        "concurrency": "[1, 4]",
        "rounds": '{"1": 5, "4": 1}',
        "batch": '{"1": 1, "4": 8}',
    }
    args = [arg for key, value in sets.items() for arg in ("--set", f"gateway.{key}={value}")]
    out = ["--out", str(tmp_path), "--docs", str(docs), "--no-plots"]
    done = run_bench(["--quick", "--only", "gateway", "--runs", "1", *args, *out], timeout=90)
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
    assert "### 9. Gateway" in docs.read_text()


def test_quick_concurrency_scenario_compares_fixed_and_adaptive_limits(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n")
    args = ["--only", "concurrency", "--set", "concurrency.requests=60", "--set", "concurrency.warmup=0.2"]
    # faster calls: this checks the harness, not the figures
    args += ["--set", "concurrency.ttft=0.05", "--set", "concurrency.tokens_per_second=200"]
    out = ["--out", str(tmp_path), "--docs", str(docs), "--no-plots"]
    done = run_bench(["--quick", *args, *out], timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = tmp_path.glob("*-quick-partial.json")
    row = json.loads(result.read_text())["scenarios"]["concurrency"]["by_strategy"]["least_loaded"]
    assert {"fixed", "adaptive", "p99_ratio", "p50_ratio"} <= set(row)
    assert row["fixed"]["failed"] == row["adaptive"]["failed"] == 0
    assert set(row["adaptive"]["limits"]) == {"np1", "np2", "np4"}  # what it learned, per instance
    assert "### 3c. Learned concurrency" in docs.read_text()
