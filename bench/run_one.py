"""Run one scenario in this (fresh) process: ``python -m bench.run_one NAME PARAMS_JSON OUT_JSON``.

The parent (:mod:`bench.cli`) starts one of these per scenario, so that a scenario never inherits
another's imports, threads, sockets or garbage.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from bench._util import loadavg, quiet_logging


def main(argv: list[str]) -> int:
    name, params_json, out = argv
    params = json.loads(params_json)
    quiet_logging()
    record = {"loadavg_before": loadavg(), "started_at": time.time()}
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.scenarios.{name}")
        record["result"] = module.run(params)
        status = 0
    except Exception:
        record["error"] = traceback.format_exc()
        print(record["error"], file=sys.stderr)
        status = 1
    record["duration_s"] = round(time.perf_counter() - t0, 3)
    record["loadavg_after"] = loadavg()
    Path(out).write_text(json.dumps(record, default=_default))
    return status


def _default(value: object) -> object:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
