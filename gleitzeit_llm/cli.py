"""The ``gleitzeit-llm`` command.

    gleitzeit-llm status [--watch] [--json]     the pool's instances (or a running app's, --metrics-url)
    gleitzeit-llm chat "prompt" -m llama3.2      one prompt, streamed, with routing hints as flags
    gleitzeit-llm batch docs/ -m llama3.2 -p ..  a prompt over many files, resumable, JSON Lines out
    gleitzeit-llm run workflow.yaml --var k=v    a YAML workflow, results as JSON
    gleitzeit-llm emulate --instances 3          emulated Ollama servers on loopback
    gleitzeit-llm metrics --port 9464            the pool's Prometheus metrics, served
    gleitzeit-llm serve --port 11435             the pool behind Ollama's and OpenAI's API
    gleitzeit-llm demo                           the embedded demo on emulated servers

The pool comes from ``--config file.yaml``, else the ``GLEITZEIT_OLLAMA_*`` environment. Exit
codes: 0 success, 1 the command ran but something failed, 2 a usage or configuration error,
130 interrupted. Reference: ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from gleitzeit_llm._version import __version__
from gleitzeit_llm.errors import ConfigError, GleitzeitError, RequestError

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A mistake on the command line that argparse cannot see; exits 2 with the message."""


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _pool_config(args: argparse.Namespace) -> Any:
    from gleitzeit_llm.config import PoolConfig

    return _with_shared_state(args, PoolConfig.load(args.config))


def _with_shared_state(args: argparse.Namespace, config: Any) -> Any:
    """``--shared-state URL`` over the URL the pool's configuration says (its other
    shared_state settings, such as ``cluster``, stay)."""
    url = getattr(args, "shared_state", None)
    if not url:
        return config
    shared = url if config.shared_state is None else {**config.shared_state.model_dump(), "url": url}
    return config.model_copy(update={"shared_state": shared})


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value


def _option_value(text: str) -> Any:
    """``--option`` values: JSON when they parse (numbers, true, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _add_request_flags(parser: argparse.ArgumentParser) -> None:
    """Routing hints and Ollama request options, shared by chat and batch."""
    from gleitzeit_llm.config import LoadBalancingStrategy

    hints = parser.add_argument_group("routing hints (steer the pool; never sent to Ollama)")
    hints.add_argument(
        "--strategy",
        metavar="NAME",
        help=f"load_balancing_strategy for this call ({', '.join(m.value for m in LoadBalancingStrategy)})",
    )
    hints.add_argument("--tags", metavar="A,B", help="instance_tags: only instances with all these tags")
    hints.add_argument("--require-gpu", action="store_true", help="only instances tagged gpu")
    hints.add_argument("--fallback-model", metavar="MODEL", help="model to use if MODEL fails everywhere")
    hints.add_argument("--max-latency", type=float, metavar="MS", help="prefer instances faster than MS ms")
    hints.add_argument("--session-id", metavar="ID", help="keep calls with this id on one instance")
    request = parser.add_argument_group("request")
    request.add_argument(
        "-O",
        "--option",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=VALUE",
        help="an Ollama option, e.g. -O temperature=0.2 -O num_predict=200 (repeatable)",
    )
    request.add_argument("--keep-alive", metavar="DURATION", help="how long the model stays loaded (5m, -1)")


def _request_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.strategy:
        params["load_balancing_strategy"] = args.strategy
    if args.tags:
        params["instance_tags"] = [t.strip() for t in args.tags.split(",") if t.strip()]
    if args.require_gpu:
        params["require_gpu"] = True
    if args.fallback_model:
        params["fallback_model"] = args.fallback_model
    if args.max_latency is not None:
        params["max_latency"] = args.max_latency
    if args.session_id:
        params["session_id"] = args.session_id
    if args.option:
        params["options"] = {k: _option_value(v) for k, v in args.option}
    if args.keep_alive:
        params["keep_alive"] = args.keep_alive
    return params


def _styled(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


_COLORS = {
    "healthy": "32",
    "degraded": "33",
    "unhealthy": "31",
    "unknown": "2",
    "open": "31",
    "half_open": "33",
}


def _paint(text: str, word: str, on: bool) -> str:
    code = _COLORS.get(word)
    return f"\x1b[{code}m{text}\x1b[0m" if on and code else text


# ---------------------------------------------------------------------------------------------
# status


def _short(model: str) -> str:
    return model[: -len(":latest")] if model.endswith(":latest") else model


def _models_cell(info: dict[str, Any]) -> str:
    loaded = list(info.get("models_loaded") or [])
    installed = info.get("models_installed")
    names = [f"{_short(m)}*" for m in loaded]
    if installed is not None:
        names += [_short(m) for m in installed if m not in loaded]
    elif info.get("models_installed_count") is not None:
        rest = int(info["models_installed_count"]) - len(loaded)
        if rest > 0:
            names.append(f"+{rest} installed")
    return " ".join(names) or "-"


def render_status(status: dict[str, Any], *, color: bool = False) -> str:
    """The status table: one row per instance; ``*`` marks a loaded model."""
    header = ("INSTANCE", "STATE", "BREAKER", "IN-FLIGHT", "REQUESTS", "P50", "ERRORS", "MODELS (* loaded)")
    rows = []
    for instance_id, info in status["instances"].items():
        requests = int(info.get("total_requests") or 0)
        p50 = info.get("p50_response_time")
        rows.append(
            (
                instance_id,
                info["state"],
                info["circuit_state"],
                f"{info['active_requests']}/{info.get('max_concurrent', '?')}",
                str(requests),
                f"{p50 * 1000:.0f} ms" if requests and p50 is not None else "-",
                f"{info.get('error_rate') or 0:.1f}%" if requests else "-",
                _models_cell(info),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = {3, 4, 5, 6}

    def line(cells: Sequence[str], paint: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            if paint and i in (1, 2):
                text = _paint(text, cell, color)
            out.append(text)
        return "  ".join(out).rstrip()

    lines = [line(header, False), *(line(r, True) for r in rows)]
    footer = f"{status['healthy_instances']}/{len(rows)} healthy"
    if status.get("strategy"):
        footer += f"  strategy {status['strategy']}"
    footer += f"  waiting {status.get('waiting_requests', 0)}"
    if status.get("source"):
        footer += f"  source {status['source']}"
    shared = status.get("shared_state")
    if shared:  # counts are pool-wide while Redis answers
        mode = "up" if shared["up"] else "DOWN, local state"
        footer += f"  shared state {mode} ({shared['url']}, namespace {shared['namespace']})"
    return "\n".join([*lines, footer])


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative ``(le, count)`` buckets."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower_le
            span = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / span if span else 0.0)
        lower_le, lower_count = le, count
    return None


def status_from_metrics(text: str, source: str = "") -> dict[str, Any]:
    """A status dict (the table's fields) from the text of a gleitzeit exporter's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    instances: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    waiting = 0.0

    def info(name: str) -> dict[str, Any]:
        return instances.setdefault(
            name,
            {"state": "unknown", "circuit_state": "closed", "active_requests": 0, "models_loaded": []},
        )

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            # gleitzeit_instance since #14; `instance` from exporters of gleitzeit-llm before it.
            inst = labels.get("gleitzeit_instance", labels.get("instance", ""))
            if sample.name == "gleitzeit_instance_state" and value == 1:
                info(inst)["state"] = labels["state"]
            elif sample.name == "gleitzeit_instance_circuit_state" and value == 1:
                info(inst)["circuit_state"] = labels["state"]
            elif sample.name == "gleitzeit_instance_in_flight":
                info(inst)["active_requests"] = int(value)
            elif sample.name == "gleitzeit_instance_max_concurrent":
                info(inst)["max_concurrent"] = int(value)
            elif sample.name == "gleitzeit_instance_model_loaded" and value == 1:
                info(inst)["models_loaded"].append(labels.get("gen_ai_request_model", labels.get("model")))
            elif sample.name == "gleitzeit_instance_models_installed":
                info(inst)["models_installed_count"] = int(value)
            elif sample.name == "gleitzeit_pool_requests_total":
                per = outcomes.setdefault(inst, {})
                per[labels["outcome"]] = per.get(labels["outcome"], 0.0) + value
            elif (
                sample.name == "gleitzeit_pool_attempt_duration_seconds_bucket"
                and labels["outcome"] == "success"
            ):
                per_le = buckets.setdefault(inst, {})
                le = float(labels["le"])
                per_le[le] = per_le.get(le, 0.0) + value
            elif sample.name == "gleitzeit_pool_waiting_requests":
                waiting = value
    for name, row in instances.items():
        counts = outcomes.get(name, {})
        ok, failed = counts.get("success", 0.0), counts.get("failure", 0.0)
        row["total_requests"] = int(ok + failed + counts.get("caller_error", 0.0))
        row["error_rate"] = 100.0 * failed / (ok + failed) if ok + failed else 0.0
        row["p50_response_time"] = _quantile(list(buckets.get(name, {}).items()), 0.5)
    if not instances:
        raise UsageError(
            f"{source or 'the metrics'}: no gleitzeit_instance_* metrics found (is it a gleitzeit exporter?)"
        )
    return {
        "healthy_instances": sum(1 for r in instances.values() if r["state"] == "healthy"),
        "waiting_requests": int(waiting),
        "instances": instances,
        "source": source,
    }


def _fetch_metrics(url: str) -> dict[str, Any]:
    import httpx

    try:
        response = httpx.get(url, timeout=5.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise GleitzeitError(f"cannot read metrics from {url}: {exc}") from None
    return status_from_metrics(response.text, source=url)


def _status(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be greater than 0")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.metrics_url:
        return _status_loop(args, lambda first: _fetch_metrics(args.metrics_url))
    from gleitzeit_llm.manager import OllamaPoolManager

    with OllamaPoolManager(config=_pool_config(args)) as pool:  # probes every instance once

        def read(first: bool) -> dict[str, Any]:
            if not first:
                pool.check_health_now()
            return pool.status()

        return _status_loop(args, read)


def _status_loop(args: argparse.Namespace, read: Callable[[bool], dict[str, Any]]) -> int:
    out = sys.stdout
    repaint = args.watch and not args.json and out.isatty()
    count = args.count if args.count is not None else (None if args.watch else 1)
    shown = 0
    healthy = False
    try:
        while True:
            status = read(shown == 0)
            healthy = bool(status["healthy_instances"])
            if args.json:
                out.write(json.dumps(status, indent=None if args.watch else 2, default=str) + "\n")
            else:
                table = render_status(status, color=_styled(out))
                if repaint:
                    out.write("\x1b[H\x1b[2J")
                elif args.watch and shown:
                    out.write("\n")
                if args.watch:
                    out.write(time.strftime("%H:%M:%S") + f"  every {args.interval:g}s, Ctrl-C to stop\n")
                out.write(table + "\n")
            out.flush()
            shown += 1
            if count is not None and shown >= count:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        if not args.watch:
            raise
    return EXIT_OK if healthy else EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# chat


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None and args.prompt != "-":
        return str(args.prompt)
    if args.prompt is None and sys.stdin.isatty():
        raise UsageError("chat: give a PROMPT, or pipe one on stdin")
    text = sys.stdin.read()
    if not text.strip():
        raise UsageError("chat: the prompt on stdin is empty")
    return text


async def _chat_async(args: argparse.Namespace) -> int:
    from gleitzeit_llm.provider import OllamaPoolProvider
    from gleitzeit_llm.workflow import public_pool_info

    prompt = _read_prompt(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": prompt})
    params = _request_params(args)
    if args.think:
        params["think"] = True
    async with OllamaPoolProvider(config=_pool_config(args)) as pool:
        if args.json:
            result = await pool.execute("llm/chat", {"model": args.model, "messages": messages, **params})
            result["pool"] = public_pool_info(result.get("pool"))
            print(json.dumps(result, indent=2, ensure_ascii=False))
            return EXIT_OK
        out, err = sys.stdout, sys.stderr
        started = time.monotonic()
        stream = pool.stream_chat(args.model, messages, **params)
        ended_with_newline, thought = True, False
        async with stream:
            async for chunk in stream:
                thinking = chunk.message.thinking if chunk.message else None
                if thinking and args.think:
                    err.write(thinking)
                    err.flush()
                    thought = True
                text = chunk.message.content if chunk.message else ""
                if text:
                    if thought:
                        err.write("\n")
                        thought = False
                    out.write(text)
                    out.flush()
                    ended_with_newline = text.endswith("\n")
        if not ended_with_newline:
            out.write("\n")
        info = stream.pool
        if info is not None and not args.quiet:
            served = info.instance_id + (f" (fallback {info.model})" if info.fallback_used else "")
            err.write(f"[{served}, {info.attempts} attempt(s), {time.monotonic() - started:.2f}s]\n")
    return EXIT_OK


def _chat(args: argparse.Namespace) -> int:
    return asyncio.run(_chat_async(args))


# ---------------------------------------------------------------------------------------------
# batch


class _ProgressBar:
    """A one-line progress bar on a terminal (redrawn at most 10 times a second)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.last = 0.0
        self.progress: Any = None

    def __call__(self, progress: Any) -> None:
        self.progress = progress
        now = time.monotonic()
        if now - self.last >= 0.1 or progress.finished == progress.total:
            self.last = now
            self.draw()

    def draw(self) -> None:
        p = self.progress
        filled = int(self.width * p.finished / (p.total or 1))
        elapsed = int(time.monotonic() - self.started)
        self.stream.write(
            f"\r[{'#' * filled}{'-' * (self.width - filled)}] {p.finished}/{p.total}  done {p.done}  "
            f"skipped {p.skipped}  failed {p.failed}  {elapsed // 60}:{elapsed % 60:02d}"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.progress is not None:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


async def _batch_async(args: argparse.Namespace) -> int:
    from gleitzeit_llm.batch import BatchJob, run_batch
    from gleitzeit_llm.provider import OllamaPoolProvider

    job = BatchJob(
        directory=args.directory,
        model=args.model,
        prompt=args.prompt,
        pattern=args.pattern,
        method=args.method,
        max_concurrent=args.max_concurrent,
        params=_request_params(args),
    )
    show = sys.stderr.isatty() if args.progress is None else args.progress
    bar = _ProgressBar(sys.stderr) if show else None
    async with OllamaPoolProvider(config=_pool_config(args)) as pool:
        try:
            summary = await run_batch(pool, job, args.output, restart=args.restart, on_progress=bar)
        finally:
            if bar is not None:
                bar.finish()
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    print(
        f"{summary.total} files: {summary.done} done, {summary.skipped} skipped (done before), "
        f"{summary.failed} failed -> {summary.output}",
        file=sys.stderr,
    )
    return EXIT_OK if summary.ok else EXIT_FAILED


def _batch(args: argparse.Namespace) -> int:
    return asyncio.run(_batch_async(args))


# ---------------------------------------------------------------------------------------------
# run


def _run(args: argparse.Namespace) -> int:
    from gleitzeit_llm.workflow import Workflow

    workflow = Workflow.load(args.workflow, dict(args.var))
    if args.check:
        print(f"{args.workflow}: {len(workflow.tasks)} task(s), valid")
        for task in workflow.tasks:
            after = f"  after {', '.join(task.depends_on)}" if task.depends_on else ""
            print(f"  {task.name}: {task.method} {task.params.get('model')}{after}")
        return EXIT_OK
    from_workflow = None if args.config else workflow.pool_config()
    config = _with_shared_state(args, from_workflow) if from_workflow else _pool_config(args)
    # Opened before running: an unwritable --output must not cost a whole run's results.
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115

    async def go() -> Any:
        from gleitzeit_llm.provider import OllamaPoolProvider

        async with OllamaPoolProvider(config=config) as pool:
            return await workflow.run(pool, max_concurrent=args.max_concurrent)

    try:
        result = asyncio.run(go())
        sink.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
    finally:
        if sink is not sys.stdout:
            sink.close()
    for name in result.failed:
        print(
            f"gleitzeit-llm: task {name!r} {result.tasks[name].status}: {result.tasks[name].error}",
            file=sys.stderr,
        )
    return EXIT_OK if result.ok else EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# emulate


def _fault_fields() -> dict[str, type]:
    """The emulator's fault fields with their types (``int`` for the ones that default to None)."""
    from dataclasses import fields

    from gleitzeit_llm.testing import Faults

    return {f.name: int if f.default is None else type(f.default) for f in fields(Faults)}


def _fault(text: str) -> tuple[int | None, str, Any]:
    """``[N:]field=value`` -> (instance number or None for all, field, typed value)."""
    where, colon, rest = text.partition(":")
    index: int | None = None
    if colon and where.strip().isdigit():
        index, text = int(where), rest
    name, value = _key_value(text)
    name = name.replace("-", "_")
    valid = _fault_fields()
    kind = valid.get(name)
    if kind is None:
        raise argparse.ArgumentTypeError(f"unknown fault {name!r}; valid: {', '.join(valid)}")
    try:
        typed: Any = value.strip().lower() in ("1", "true", "yes", "on") if kind is bool else kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fault {name}: expected {kind.__name__}, got {value!r}") from None
    return index, name, typed


def _emulate_parser() -> argparse.ArgumentParser:
    from gleitzeit_llm.testing.cli import build_parser as emulator_parser

    parser = emulator_parser()
    parser.prog = "gleitzeit-llm emulate"
    parser.description = (
        "Run emulated Ollama servers on loopback until Ctrl-C; prints their URLs, one per line, "
        "and the GLEITZEIT_OLLAMA_INSTANCES line to use them on stderr."
    )
    parser.add_argument(
        "--fault",
        action="append",
        type=_fault,
        default=[],
        metavar="[N:]FIELD=VALUE",
        help="a fault on every instance, or on instance N (1-based), e.g. --fault 2:slow_factor=5 "
        f"(repeatable; fields: {', '.join(_fault_fields())})",
    )
    return parser


def _emulate(argv: Sequence[str]) -> int:
    from gleitzeit_llm.testing import OllamaEmulator
    from gleitzeit_llm.testing.cli import emulator_kwargs

    parser = _emulate_parser()
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    for index, name, _ in args.fault:
        if index is not None and not 1 <= index <= args.instances:
            parser.error(f"--fault {index}:{name}: there are only {args.instances} instance(s)")
    kwargs = emulator_kwargs(args)
    base_faults = dict(kwargs.pop("faults") or {})
    try:
        emulators = []
        for n in range(1, args.instances + 1):
            faults = {**base_faults, **{k: v for i, k, v in args.fault if i in (None, n)}}
            port = args.port + n - 1 if args.port else 0
            emulators.append(OllamaEmulator(port=port, faults=faults or None, **kwargs))
    except (ValueError, TypeError) as exc:
        print(f"gleitzeit-llm emulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        for emulator in emulators:
            try:
                emulator.start()
            except OSError as exc:
                print(
                    f"gleitzeit-llm emulate: cannot listen on {args.host}:{emulator.port}: {exc}",
                    file=sys.stderr,
                )
                return EXIT_FAILED
        for emulator in emulators:
            print(emulator.url)
        sys.stdout.flush()
        entries = ",".join(f"emu{n}:{e.url}" for n, e in enumerate(emulators, 1))
        print(f"export GLEITZEIT_OLLAMA_INSTANCES={entries}", file=sys.stderr, flush=True)
        _wait_for_stop()
        return EXIT_OK
    finally:
        for emulator in emulators:
            emulator.close()


def _wait_for_stop() -> None:
    """Block until SIGINT or SIGTERM (a server's clean shutdown)."""
    import signal
    import threading

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # only there can signals be handled
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------------
# metrics, demo


def _metrics(args: argparse.Namespace) -> int:
    from gleitzeit_llm.manager import OllamaPoolManager
    from gleitzeit_llm.observability.prometheus import instrument, start_metrics_server

    with OllamaPoolManager(config=_pool_config(args)) as pool:
        metrics = instrument(pool)
        try:
            server = start_metrics_server(args.port, addr=args.addr)
        except OSError as exc:
            raise UsageError(
                f"metrics: cannot listen on {args.addr}:{args.port}: {exc.strerror or exc}"
            ) from None
        print(server.url, flush=True)
        try:
            _wait_for_stop()
            return EXIT_OK
        finally:
            server.close()
            metrics.close()


def _serve(args: argparse.Namespace) -> int:
    try:
        from gleitzeit_llm.gateway.serve import serve
        from gleitzeit_llm.gateway.settings import GatewaySettings
    except ImportError as exc:  # the gateway extra is not installed
        raise UsageError(
            f"serve needs the gateway extra: pip install 'gleitzeit-llm[gateway]' ({exc})"
        ) from None
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    try:
        settings = GatewaySettings(
            api_keys=GatewaySettings.keys_from(args.api_key),
            allow_admin=args.allow_admin,
            max_body=args.max_body,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        serve(args.config, settings, host=args.host, port=args.port, workers=args.workers)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a normal stop
        return EXIT_OK
    except OSError as exc:
        raise UsageError(f"serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from gleitzeit_llm.demo import run_demo

    return run_demo(requests=args.requests)


# ---------------------------------------------------------------------------------------------
# The parser and the entry point


def _command(
    commands: Any, name: str, run: Callable[[argparse.Namespace], int], summary: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand that calls ``run(args)``; ``summary`` shows in the command list."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=summary, description=description)
    parser.set_defaults(run=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gleitzeit-llm",
        description="A pool of Ollama servers, routed well.",
        epilog="The pool comes from --config, else the GLEITZEIT_OLLAMA_* environment, else "
        "OLLAMA_HOST (default: http://localhost:11434). See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"gleitzeit-llm {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="pool configuration YAML (default: GLEITZEIT_OLLAMA_* environment)"
    )
    parser.add_argument(
        "--shared-state",
        metavar="URL",
        help="share the pool's state with other processes through this Redis (redis://, rediss://, "
        "unix://; default: shared_state of the config, GLEITZEIT_OLLAMA_SHARED_STATE_URL; a Redis "
        "Cluster node with GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER=true)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log the pool's decisions to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    status = commands.add_parser("status", help="show the pool's instances", description=_STATUS_HELP)
    status.add_argument(
        "--json", action="store_true", help="machine-readable output (one line per refresh with --watch)"
    )
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes (default 2)"
    )
    status.add_argument("--count", type=int, metavar="N", help="stop after N refreshes")
    status.add_argument(
        "--metrics-url",
        metavar="URL",
        help="read a running application's pool from its gleitzeit /metrics endpoint",
    )
    status.set_defaults(run=_status)

    chat = _command(
        commands,
        "chat",
        _chat,
        "send one prompt, stream the answer",
        "Send one prompt through the pool and stream the answer to stdout; where it ran goes to stderr.",
    )
    chat.add_argument("prompt", nargs="?", help="the prompt ('-' or omitted: read stdin)")
    chat.add_argument("-m", "--model", required=True, help="model name, e.g. llama3.2")
    chat.add_argument("-s", "--system", help="a system message")
    chat.add_argument(
        "--think", action="store_true", help="ask a thinking model to think; thoughts go to stderr"
    )
    chat.add_argument("--json", action="store_true", help="no streaming: print Ollama's whole answer as JSON")
    chat.add_argument(
        "-q", "--quiet", action="store_true", help="no [instance, attempts, time] line on stderr"
    )
    _add_request_flags(chat)

    batch = _command(
        commands,
        "batch",
        _batch,
        "run a prompt over many files (resumable)",
        "Run a prompt over every file in DIRECTORY that matches --pattern, spread over the pool. "
        "Each finished file appends one JSON line to --output; a rerun skips files already done.",
    )
    batch.add_argument("directory", help="folder with the input files")
    batch.add_argument("-m", "--model", required=True, help="model name")
    batch.add_argument("-p", "--prompt", default="", help="text put before each file's content")
    batch.add_argument(
        "--pattern", default="*.txt", help="glob of files to process (default *.txt; **/*.md recurses)"
    )
    batch.add_argument("--method", default="llm/chat", choices=("llm/chat", "llm/generate", "llm/embed"))
    batch.add_argument(
        "-j", "--max-concurrent", type=int, default=10, metavar="N", help="files in flight (default 10)"
    )
    batch.add_argument(
        "-o", "--output", default="results.jsonl", help="JSON Lines results (default results.jsonl)"
    )
    batch.add_argument("--restart", action="store_true", help="empty --output first instead of resuming")
    batch.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    batch.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    _add_request_flags(batch)

    run = _command(
        commands,
        "run",
        _run,
        "run a YAML workflow",
        "Run the tasks of a workflow file across the pool (independent tasks at once) and "
        "print the results as JSON. The pool: --config, else the file's providers:, else the environment.",
    )
    run.add_argument("workflow", help="workflow YAML (docs/workflows.md)")
    run.add_argument(
        "--var",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=VALUE",
        help="set ${NAME} (repeatable; overrides the file's variables:)",
    )
    run.add_argument("-o", "--output", metavar="FILE", help="write the JSON here instead of stdout")
    run.add_argument(
        "-j", "--max-concurrent", type=int, metavar="N", help="tasks in flight (default: pool capacity)"
    )
    run.add_argument(
        "--check", action="store_true", help="validate the workflow and list its tasks; run nothing"
    )

    commands.add_parser(
        "emulate", help="run emulated Ollama servers on loopback (see 'emulate --help')", add_help=False
    )

    metrics = _command(
        commands,
        "metrics",
        _metrics,
        "serve the pool's Prometheus metrics",
        "Health-check the pool and serve its live state as Prometheus metrics until Ctrl-C.",
    )
    metrics.add_argument("--port", type=int, default=9464, help="port (default 9464; 0 picks a free one)")
    metrics.add_argument("--addr", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")

    serve = _command(
        commands,
        "serve",
        _serve,
        "serve the pool behind Ollama's and OpenAI's HTTP API",
        "Serve the pool as one Ollama server (/api/...) and an OpenAI-compatible API (/v1/...), with "
        "the pool's routing, failover and metrics, until Ctrl-C. See docs/gateway.md.",
    )
    serve.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="pool configuration YAML (as the global --config)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=11435, help="port (default 11435; 0 picks a free one)")
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' (repeatable; also GLEITZEIT_GATEWAY_API_KEYS)",
    )
    serve.add_argument(
        "--allow-admin", action="store_true", help="allow pull and delete (fanned out to every instance)"
    )
    serve.add_argument(
        "--max-body",
        type=int,
        default=8 * 1024 * 1024,
        metavar="BYTES",
        help="largest request body (default 8 MiB)",
    )
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N", help="uvicorn worker processes (default 1)"
    )

    demo = commands.add_parser("demo", help="run the embedded demo on emulated Ollama servers")
    demo.add_argument("--requests", type=int, default=120, help="how many chat requests (default 120)")
    demo.set_defaults(run=_demo)
    return parser


_STATUS_HELP = (
    "Show the pool's instances: state, breaker, in-flight/limit, requests, p50 latency, error rate, "
    "and models (* loaded). Without --metrics-url the numbers are this command's own view after one "
    "round of health checks; with it, they are a running application's."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gleitzeit-llm`` command; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list[:1] == ["emulate"]:
            return _emulate(args_list[1:])
        parser = build_parser()
        args: Any = parser.parse_args(args_list)
        if args.verbose:
            logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
            logging.getLogger("gleitzeit_llm").setLevel(logging.DEBUG)
        return int(args.run(args))
    except (ConfigError, RequestError, UsageError) as exc:
        print(f"gleitzeit-llm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GleitzeitError as exc:
        kind = "" if type(exc) is GleitzeitError else f"{type(exc).__name__}: "
        print(f"gleitzeit-llm: {kind}{exc}", file=sys.stderr)
        return EXIT_FAILED
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"gleitzeit-llm: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
