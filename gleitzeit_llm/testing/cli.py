"""Run emulated Ollama servers from the command line until SIGINT or SIGTERM.

    python -m gleitzeit_llm.testing --port 11434 --instances 3 --models llama3.2,nomic-embed-text

prints one URL per line (stdout, flushed) once every instance listens. ``gleitzeit-llm emulate``
calls :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from gleitzeit_llm.testing.emulator import DEFAULT_MODELS, OllamaEmulator

__all__ = ["build_parser", "main"]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so that the project CLI can show the same help)."""
    parser = argparse.ArgumentParser(
        prog="python -m gleitzeit_llm.testing",
        description="Run emulated Ollama servers on loopback; prints their URLs, one per line.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=0, help="first port; instances use consecutive ports (0: free ports)")
    add("--instances", type=int, default=1, help="how many servers (default 1)")
    add("--models", type=_names, default=list(DEFAULT_MODELS), help="comma-separated installed models")
    add("--models-json", help="installed models as a JSON list of EmulatedModel fields (overrides --models)")
    add("--loaded", type=_names, default=[], help="comma-separated models resident from the start")
    add("--num-parallel", type=int, default=1, help="concurrent requests per loaded model (default 1)")
    add("--max-loaded-models", type=int, default=3, help="resident models before eviction (default 3)")
    add("--max-queue", type=int, default=512, help="requests waiting for a load before 503 (default 512)")
    add("--keep-alive", default="5m", help="default keep_alive (default 5m)")
    add("--load-time", type=float, default=1.0, help="cold-load seconds (default 1.0)")
    add("--ttft", type=float, default=0.02, help="base time to first token, seconds (default 0.02)")
    add("--prompt-tps", type=float, default=2000.0, help="prompt tokens per second (default 2000)")
    add("--prompt-cache", type=_flag, default=True, help="reuse cached prompt prefixes (default true)")
    add("--multiuser-cache", type=_flag, default=False, help="LRU slot choice (default false)")
    add("--tokens-per-second", type=float, default=50.0, help="output tokens per second (default 50)")
    add("--reply-tokens", type=int, default=12, help="length of the built-in reply (default 12)")
    add("--time-scale", type=float, default=1.0, help="real seconds per modelled second (default 1)")
    add("--error-rate", type=float, default=0.0, help="probability of a 500 per request (default 0)")
    add("--seed", type=int, default=0, help="seed of the error-rate RNG (default 0)")
    add("--ollama-version", default="0.12.6", help="what /api/version reports")
    return parser


def emulator_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    models: list[Any] = json.loads(args.models_json) if args.models_json else args.models
    return {
        "models": models,
        "host": args.host,
        "loaded": args.loaded,
        "num_parallel": args.num_parallel,
        "max_loaded_models": args.max_loaded_models,
        "max_queue": args.max_queue,
        "keep_alive": args.keep_alive,
        "load_time": args.load_time,
        "ttft": args.ttft,
        "prompt_tokens_per_second": args.prompt_tps,
        "prompt_cache": args.prompt_cache,
        "multiuser_cache": args.multiuser_cache,
        "tokens_per_second": args.tokens_per_second,
        "reply_tokens": args.reply_tokens,
        "time_scale": args.time_scale,
        "version": args.ollama_version,
        "seed": args.seed,
        "faults": {"error_rate": args.error_rate} if args.error_rate else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Start the emulators, print their URLs, serve until SIGINT/SIGTERM; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.instances < 1:
        print("--instances must be at least 1", file=sys.stderr)
        return 2
    try:
        kwargs = emulator_kwargs(args)
        emulators = [
            OllamaEmulator(port=args.port + index if args.port else 0, **kwargs)
            for index in range(args.instances)
        ]
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        for emulator in emulators:
            try:
                emulator.start()
            except OSError as exc:
                print(f"error: cannot listen on {args.host}:{emulator.port}: {exc}", file=sys.stderr)
                return 1
        for emulator in emulators:
            print(emulator.url)
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        for emulator in emulators:
            emulator.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
