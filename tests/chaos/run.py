"""The long chaos profile (``make chaos``): minutes of faults under load, then a report.

python tests/chaos/run.py --calls 6000 --concurrency 16 --seed 7
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_workload import run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=6000, help="calls in the faulty phase (default 6000)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight at once (default 16)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the workload and the faults (default 7)")
    parser.add_argument("--time-scale", type=float, default=0.005, help="emulator time scale (default 0.005)")
    args = parser.parse_args()
    report = run_chaos(args.seed, calls=args.calls, concurrency=args.concurrency, time_scale=args.time_scale)
    print(report.summary())
    status = report.final_status
    broken = [
        *report.unclassified,
        *report.duplicates,
        *report.loop_errors,
        *(["in-flight counts not back to 0"] if status.get("active_requests") else []),
        *(["an instance is not healthy after the calm phase"]
          if any(i["state"] != "healthy" for i in status.get("instances", {}).values()) else []),
    ]  # fmt: skip
    for problem in broken:
        print(f"PROBLEM: {problem}")
    print("chaos: " + ("all invariants held" if not broken else f"{len(broken)} problem(s)"))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
