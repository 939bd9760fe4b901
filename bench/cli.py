"""``python -m bench``: run the scenarios, write the JSON, the docs table and the plots."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report, targets
from bench._util import ROOT, loadavg, log, machine_info

SCENARIOS = [
    "overhead",
    "scaling",
    "unequal",
    "coldstart",
    "concurrency",
    "residency",
    "promptcache",
    "failure",
    "routing",
    "footprint",
    "scaleout",
    "gateway",
    "prefixshare",
]
DEFAULT_OUT = ROOT / "bench" / "results"
DEFAULT_DOCS = ROOT / "docs" / "performance.md"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="a smoke run of a minute or so (few runs, small loads)"
    )
    p.add_argument("--only", help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})")
    p.add_argument("--skip", help="comma-separated scenarios to leave out")
    p.add_argument("--runs", type=int, help="override the number of repeated runs of every scenario")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SCENARIO.KEY=JSON",
        help="override one parameter of a scenario, e.g. --set footprint.requests=20000 (repeatable)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (default bench/results)")
    p.add_argument(
        "--docs",
        type=Path,
        help="Markdown page whose generated section is rewritten (default docs/performance.md for a "
        "full run of every scenario, none for --quick or --only)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not touch any Markdown page")
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULTS",
        help="measure nothing: re-evaluate the targets of a results file, redraw its plots and "
        "rewrite the docs section from it (after a change to the report)",
    )
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load average to drop below --quiet-load",
    )
    p.add_argument("--quiet-load", type=float, default=0.5, help="load average that counts as quiet (0.5)")
    p.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds a scenario may take before it is killed"
    )
    return p


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _rerender(args: argparse.Namespace) -> int:
    json_path: Path = args.from_json
    data = json.loads(json_path.read_text())
    data["targets"] = targets.evaluate(data["scenarios"])
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    partial = json_path.stem.endswith(("-quick", "-partial"))
    plots_dir = json_path.parent / ("plots" if not partial else f"plots-{json_path.stem.split('-', 3)[-1]}")
    written: list[str] = []
    if not args.no_plots:
        from bench import plots

        written = plots.draw(data, plots_dir)
    docs = None if args.no_docs else (args.docs or (None if partial else DEFAULT_DOCS))
    if docs is not None:
        here = docs.resolve().parent
        section = report.render(
            data,
            report.relpath(json_path.resolve(), ROOT),
            report.relpath(json_path.resolve(), here),
            report.relpath(plots_dir.resolve(), here) if written else None,
        )
        report.update_docs(docs, section)
        log(f"updated {docs} from {json_path}")
    return 0


def _overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        scenario, dot, name = key.partition(".")
        if not sep or not dot or scenario not in SCENARIOS:
            raise ValueError(f"{item!r} is not SCENARIO.KEY=JSON with a known scenario")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # a bare string
        out.setdefault(scenario, {})[name] = parsed
    return out


def _wait_quiet(seconds: float, threshold: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        load = loadavg()
        if not load or load[0] < threshold:
            return
        log(f"waiting for a quiet machine: load average {load[0]} >= {threshold}")
        time.sleep(10)
    log("machine still busy; measuring anyway (the load average is recorded with the results)")


def _run_scenario(name: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.run_one", name, json.dumps(params), str(out)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, check=False)
            code: int | str = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        if out.exists():
            record: dict[str, Any] = json.loads(out.read_text())
        else:
            record = {"error": f"scenario process ended with {code} and wrote no result"}
        record.setdefault("duration_s", round(time.perf_counter() - t0, 3))
        record["exit"] = code
        return record


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    mode = "quick" if args.quick else "full"
    chosen = _names(args.only) or list(SCENARIOS)
    unknown = sorted(set(chosen + _names(args.skip)) - set(SCENARIOS))
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {SCENARIOS}", file=sys.stderr)
        return 2
    chosen = [n for n in chosen if n not in _names(args.skip)]
    if args.from_json is not None:
        return _rerender(args)
    try:
        overrides = _overrides(args.set)
    except ValueError as exc:
        print(f"--set: {exc}", file=sys.stderr)
        return 2
    if args.wait_quiet > 0:
        _wait_quiet(args.wait_quiet, args.quiet_load)

    import importlib

    started = time.time()
    data: dict[str, Any] = {
        "schema": 1,
        "mode": mode,
        "date": time.strftime("%Y-%m-%d", time.localtime(started)),
        "started_at": started,
        "machine": {**machine_info(), "loadavg_before": loadavg()},
        "scenarios": {},
        "runs": {},
    }
    failed = []
    for name in chosen:
        params = dict(importlib.import_module(f"bench.scenarios.{name}").PARAMS[mode])
        if args.runs is not None and "runs" in params:
            params["runs"] = args.runs
        params.update(overrides.get(name, {}))
        log(f"scenario {name} ({mode}) ...")
        record = _run_scenario(name, params, args.timeout)
        data["runs"][name] = {k: v for k, v in record.items() if k != "result"}
        if "result" in record:
            data["scenarios"][name] = record["result"]
        else:
            failed.append(name)
            log(f"scenario {name} FAILED: {str(record.get('error'))[-500:]}")
        log(f"scenario {name} took {record['duration_s']:.0f} s")
    data["machine"]["loadavg_after"] = loadavg()
    data["finished_at"] = time.time()
    data["duration_s"] = round(data["finished_at"] - started, 1)
    data["targets"] = targets.evaluate(data["scenarios"])

    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = (
        ""
        if mode == "full" and chosen == SCENARIOS
        else f"-{mode}"
        if chosen == SCENARIOS
        else f"-{mode}-partial"
    )
    json_path = out_dir / f"{data['date']}{suffix}.json"
    json_path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    log(f"wrote {json_path}")

    plots_dir = out_dir / "plots" if not suffix else out_dir / f"plots{suffix}"
    plots_written: list[str] = []
    if not args.no_plots:
        try:
            from bench import plots

            plots_written = plots.draw(data, plots_dir)
            log(f"drew {len(plots_written)} plot(s) in {plots_dir}")
        except ImportError as exc:
            log(f"no plots: {exc} (install the bench extra: pip install -e '.[bench]')")

    docs = None if args.no_docs else args.docs
    if docs is None and not args.no_docs and not suffix:
        docs = DEFAULT_DOCS
    if docs is not None:
        here = docs.resolve().parent
        plots_rel = report.relpath(plots_dir, here) if plots_written else None
        section = report.render(
            data, report.relpath(json_path, ROOT), report.relpath(json_path, here), plots_rel
        )
        report.update_docs(docs, section)
        log(f"updated {docs}")

    for t in data["targets"]:
        status = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        value = "n/a" if t["measured"] is None else f"{t['measured']:.3g} {t['unit']}"
        log(f"target {t['title']}: {value} (goal {t['goal']}) -> {status}")
    return 1 if failed else 0
