"""Resumable batch runs: one prompt over many files, spread over the pool, results as JSON Lines.

::

    job = BatchJob(directory="documents", pattern="*.txt", prompt="Summarise this document",
                   model="llama3.2", max_concurrent=10)
    summary = await run_batch(provider, job, "results.jsonl")

Each finished file appends one line to the output at once, so an interrupted run loses nothing
it finished. A rerun with the same job skips the files whose last line says ``ok`` and whose
content has not changed since; failed files are tried again. An output file that holds another
job's results (a different prompt, model, method or options) is refused rather than mixed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gleitzeit_llm.client import list_files
from gleitzeit_llm.errors import GleitzeitError, RequestError
from gleitzeit_llm.workflow import public_pool_info, response_of, validate_request

if TYPE_CHECKING:
    from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["BatchJob", "BatchProgress", "BatchSummary", "read_results", "run_batch"]


@dataclass(frozen=True)
class BatchJob:
    """What to run: ``prompt`` (prepended to each file's text) with ``model`` over the matching files.

    ``params`` are further request fields (``options``, ``keep_alive``, ...) and routing hints.
    """

    directory: str | Path
    model: str
    prompt: str = ""
    pattern: str = "*.txt"
    method: str = "llm/chat"
    max_concurrent: int = 10
    params: Mapping[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Identifies the job's results: the same files under another prompt are another job."""
        identity = {"method": self.method, "model": self.model, "prompt": self.prompt, "params": self.params}
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def request(self, text: str) -> dict[str, Any]:
        """The ``execute()`` params for one file's text."""
        body = f"{self.prompt}\n\n{text}" if self.prompt else text
        key = "input" if self.method == "llm/embed" else "prompt"
        return {**self.params, "model": self.model, key: body}


@dataclass
class BatchProgress:
    """Counts while a batch runs (handed to the ``on_progress`` callback after every file)."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        return self.skipped + self.done + self.failed


@dataclass
class BatchSummary:
    """How a batch run ended; ``ok`` when no file failed."""

    total: int
    done: int
    skipped: int
    failed: int
    output: Path
    duration: float

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "output": str(self.output),
            "duration": round(self.duration, 6),
        }


def read_results(output: str | Path) -> dict[str, dict[str, Any]]:
    """The last record per file in a results file (lines that do not parse are ignored)."""
    path = Path(output)
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short when a run was killed mid-write
            if isinstance(record, dict) and isinstance(record.get("file"), str):
                records[record["file"]] = record
    return records


def _validate(job: BatchJob) -> None:
    if (
        isinstance(job.max_concurrent, bool)
        or not isinstance(job.max_concurrent, int)
        or job.max_concurrent < 1
    ):
        raise RequestError(
            f"max_concurrent must be an integer >= 1, got {job.max_concurrent!r}", field="max_concurrent"
        )
    validate_request(job.method, job.request(""))  # a mistake in the job fails once, not per file


def _inputs(directory: Path, pattern: str, output: Path) -> list[Path]:
    """The files to process: those ``batch_process`` would take, minus the output file itself."""
    skip = output.resolve()
    return [p for p in list_files(directory, pattern) if p.resolve() != skip]


def _open_output(out: Path, restart: bool) -> TextIO:
    """``out`` opened for appending (emptied first on ``restart``), starting on a fresh line."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if restart:
        out.write_text("", encoding="utf-8")
    sink = out.open("a+b")
    if sink.tell():
        sink.seek(-1, 2)
        if sink.read(1) != b"\n":
            sink.write(b"\n")  # a line cut short by a killed run stays on its own line
    sink.close()
    return out.open("a", encoding="utf-8")


def _response(method: str, result: dict[str, Any]) -> Any:
    answer = response_of(method, result)
    return (answer[0] if answer else []) if method == "llm/embed" else answer  # one input, one vector


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def run_batch(
    pool: OllamaPoolProvider,
    job: BatchJob,
    output: str | Path,
    *,
    restart: bool = False,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> BatchSummary:
    """Run ``job`` over its files, appending one JSON line per finished file to ``output``.

    ``restart=True`` empties ``output`` first; otherwise files already done are skipped. Files
    that fail are recorded (``status: failed``) and do not stop the others. Raises
    :class:`RequestError` for a bad job, a missing directory, or an output of another job.
    """
    _validate(job)
    started = time.monotonic()
    out = Path(output)
    directory = Path(job.directory)
    files = await asyncio.to_thread(_inputs, directory, job.pattern, out)
    fingerprint = job.fingerprint()
    previous = {} if restart else await asyncio.to_thread(read_results, out)
    foreign = sorted({r.get("job") for r in previous.values()} - {fingerprint}, key=str)
    if foreign:
        raise RequestError(
            f"{out} holds results of another job (a different prompt, model, method or options); "
            "write to another --output, or pass --restart to replace them",
            field="output",
        )
    progress = BatchProgress(total=len(files))
    queue: asyncio.Queue[tuple[Path, str]] = asyncio.Queue()
    for path in files:
        name = path.relative_to(directory).as_posix()
        queue.put_nowait((path, name))

    sink = await asyncio.to_thread(_open_output, out, restart)
    with sink:

        def write(record: dict[str, Any]) -> None:
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()

        async def one(path: Path, name: str) -> None:
            begun = time.monotonic()
            record: dict[str, Any] = {"file": name, "job": fingerprint}
            try:
                data = await asyncio.to_thread(path.read_bytes)
                record["sha256"] = _digest(data)
                before = previous.get(name)
                if before and before.get("status") == "ok" and before.get("sha256") == record["sha256"]:
                    progress.skipped += 1
                    return
                params = job.request(data.decode("utf-8", errors="replace"))
                result = await pool.execute(job.method, params)
            except (GleitzeitError, OSError) as exc:
                record.update(status="failed", error=f"{type(exc).__name__}: {exc}", response=None)
                progress.failed += 1
            else:
                record.update(
                    status="ok",
                    error=None,
                    response=_response(job.method, result),
                    model=result.get("model"),
                    pool=public_pool_info(result.get("pool")),
                )
                progress.done += 1
            record["duration"] = round(time.monotonic() - begun, 6)
            write(record)

        async def worker() -> None:
            while True:
                try:
                    path, name = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await one(path, name)
                if on_progress is not None:
                    on_progress(progress)

        if on_progress is not None:
            on_progress(progress)
        workers = [asyncio.ensure_future(worker()) for _ in range(min(job.max_concurrent, len(files)) or 1)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
    return BatchSummary(
        total=len(files),
        done=progress.done,
        skipped=progress.skipped,
        failed=progress.failed,
        output=out,
        duration=time.monotonic() - started,
    )
