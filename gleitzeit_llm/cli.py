"""The ``gleitzeit-llm`` command.

    gleitzeit-llm demo                 the embedded demo on emulated servers
    gleitzeit-llm emulate --instances 3  emulated Ollama servers on loopback
    gleitzeit-llm status [--json]      the pool's instances as the pool sees them

Configuration comes from ``--config file.yaml`` or the ``GLEITZEIT_OLLAMA_*`` environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from gleitzeit_llm.errors import GleitzeitError

__all__ = ["main"]


def _status(args: argparse.Namespace) -> int:
    from gleitzeit_llm.config import PoolConfig
    from gleitzeit_llm.manager import OllamaPoolManager

    config = PoolConfig.load(args.config)
    with OllamaPoolManager(config=config) as pool:
        status = pool.status()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"{'instance':<16} {'state':<10} {'breaker':<10} {'in-flight':>9} {'requests':>9}  models")
    for instance_id, info in status["instances"].items():
        models = ", ".join(info["models_installed"] or []) or "-"
        print(
            f"{instance_id:<16} {info['state']:<10} {info['circuit_state']:<10} "
            f"{info['active_requests']:>9} {info['total_requests']:>9}  {models}"
        )
    return 0 if status["healthy_instances"] else 1


def _demo(args: argparse.Namespace) -> int:
    from gleitzeit_llm.demo import run_demo

    return run_demo(requests=args.requests)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gleitzeit-llm", description="A pool of Ollama servers, routed well."
    )
    parser.add_argument("--config", help="pool configuration YAML (default: GLEITZEIT_OLLAMA_* environment)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser("demo", help="run the embedded demo on emulated Ollama servers")
    demo.add_argument("--requests", type=int, default=120, help="how many chat requests (default 120)")
    demo.set_defaults(run=_demo)

    commands.add_parser(
        "emulate", help="run emulated Ollama servers on loopback (see 'emulate --help')", add_help=False
    )

    status = commands.add_parser("status", help="show the pool's instances")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gleitzeit-llm`` command; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulate"]:
        from gleitzeit_llm.testing.cli import main as emulate

        return emulate(args_list[1:])
    parser = build_parser()
    args: Any = parser.parse_args(args_list)
    try:
        return int(args.run(args))
    except GleitzeitError as exc:
        print(f"gleitzeit-llm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
