"""``gleitzeit-llm batch``: a prompt over many files, JSON Lines out, resumable; against emulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from gleitzeit_llm.batch import BatchJob, read_results, run_batch
from gleitzeit_llm.provider import OllamaPoolProvider

CLI = [sys.executable, "-m", "gleitzeit_llm.cli"]


def run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env={**os.environ, **env}
    )


def pool_env(emulator: Any) -> dict[str, str]:
    # One instance and no retries: a fault fails the file instead of moving to another try.
    return {"GLEITZEIT_OLLAMA_INSTANCES": f"emu:{emulator.url}", "GLEITZEIT_OLLAMA_RETRY_ATTEMPTS": "0"}


def chats(emulator: Any) -> int:
    return len(emulator.requests_for("/api/chat"))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_docs(root: Path, names: list[str]) -> Path:
    docs = root / "docs"
    docs.mkdir(exist_ok=True)
    for name in names:
        (docs / name).write_text(f"The text of {name}.")
    return docs


def test_each_file_gets_one_line_and_a_rerun_skips_them(ollama_emulators: Any, tmp_path: Path) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"])
    make_docs(tmp_path, ["a.txt", "b.txt", "c.txt", "notes.md"])
    args = ("batch", "docs", "-m", "llama3.2", "-p", "Summarise this document", "-j", "2")
    first = run(*args, env=pool_env(emu), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "3 files: 3 done, 0 skipped (done before), 0 failed -> results.jsonl" in first.stderr
    records = lines(tmp_path / "results.jsonl")
    assert sorted(r["file"] for r in records) == ["a.txt", "b.txt", "c.txt"]
    assert all(r["status"] == "ok" and r["response"] and r["pool"]["instance_id"] == "emu" for r in records)
    assert all("instance_url" not in r["pool"] for r in records)
    assert chats(emu) == 3
    prompt = emu.requests_for("/api/chat")[-1].body["messages"][0]["content"]
    assert prompt.startswith("Summarise this document\n\nThe text of ")

    again = run(*args, env=pool_env(emu), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "3 files: 0 done, 3 skipped" in again.stderr
    assert chats(emu) == 3  # nothing sent again
    assert len(lines(tmp_path / "results.jsonl")) == 3


def test_failed_and_changed_files_are_redone_and_failures_exit_1(
    ollama_emulators: Any, tmp_path: Path
) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"])
    docs = make_docs(tmp_path, ["a.txt", "b.txt", "c.txt"])
    args = ("batch", "docs", "-m", "llama3.2", "-o", "out/results.jsonl", "--json")
    assert run(*args, env=pool_env(emu), cwd=tmp_path).returncode == 0
    (docs / "b.txt").write_text("b, edited")
    (docs / "d.txt").write_text("d, new")
    emu.set_faults(error_rate=1.0)

    failing = run(*args, env=pool_env(emu), cwd=tmp_path)
    assert failing.returncode == 1
    assert json.loads(failing.stdout) == {
        "total": 4,
        "done": 0,
        "skipped": 2,
        "failed": 2,
        "output": str(Path("out/results.jsonl")),
        "duration": json.loads(failing.stdout)["duration"],
    }
    latest = read_results(tmp_path / "out/results.jsonl")
    assert latest["b.txt"]["status"] == latest["d.txt"]["status"] == "failed"
    assert "InstanceFailedError" in latest["d.txt"]["error"]

    emu.clear_faults()
    before = chats(emu)
    fixed = run(*args, env=pool_env(emu), cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert chats(emu) - before == 2  # only b and d
    assert {r["status"] for r in read_results(tmp_path / "out/results.jsonl").values()} == {"ok"}


def test_another_jobs_results_are_refused_unless_restarted(ollama_emulators: Any, tmp_path: Path) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"])
    make_docs(tmp_path, ["a.txt"])
    assert (
        run("batch", "docs", "-m", "llama3.2", "-p", "one", env=pool_env(emu), cwd=tmp_path).returncode == 0
    )
    other = run("batch", "docs", "-m", "llama3.2", "-p", "two", env=pool_env(emu), cwd=tmp_path)
    assert other.returncode == 2
    assert "another job" in other.stderr and "--restart" in other.stderr
    assert "Traceback" not in other.stderr
    restarted = run(
        "batch", "docs", "-m", "llama3.2", "-p", "two", "--restart", env=pool_env(emu), cwd=tmp_path
    )
    assert restarted.returncode == 0, restarted.stderr
    assert len(lines(tmp_path / "results.jsonl")) == 1


def test_usage_mistakes_exit_2_before_any_request(ollama_emulators: Any, tmp_path: Path) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"])
    make_docs(tmp_path, ["a.txt"])
    missing = run("batch", "nowhere", "-m", "llama3.2", env=pool_env(emu), cwd=tmp_path)
    assert missing.returncode == 2 and "nowhere" in missing.stderr
    hint = run("batch", "docs", "-m", "llama3.2", "--strategy", "fastest", env=pool_env(emu), cwd=tmp_path)
    assert hint.returncode == 2 and "load_balancing_strategy" in hint.stderr
    usage = run("batch", "docs", env=pool_env(emu), cwd=tmp_path)
    assert usage.returncode == 2 and "--model" in usage.stderr
    assert chats(emu) == 0


async def test_a_line_cut_short_by_a_killed_run_is_ignored(ollama_emulators: Any, tmp_path: Path) -> None:
    (emu,) = ollama_emulators(1, models=["nomic-embed-text"])
    docs = make_docs(tmp_path, ["a.txt", "b.txt", "c.txt"])
    out = tmp_path / "results.jsonl"
    job = BatchJob(directory=docs, model="nomic-embed-text", method="llm/embed", max_concurrent=3)
    seen: list[int] = []
    async with OllamaPoolProvider(instances=[emu.url]) as pool:
        first = await run_batch(pool, job, out, on_progress=lambda p: seen.append(p.finished))
        assert first.ok and first.done == 3
        assert seen[0] == 0 and seen[-1] == 3
        text = out.read_text().splitlines()
        out.write_text("\n".join(text[:2]) + "\n" + text[2][:25])  # the last write was cut off
        second = await run_batch(pool, job, out)
    assert (second.done, second.skipped) == (1, 2)
    records = read_results(out)
    assert sorted(records) == ["a.txt", "b.txt", "c.txt"]
    assert all(isinstance(r["response"][0], float) for r in records.values())  # embeddings
    assert len(out.read_text().splitlines()) == 4  # the torn line stays alone, ignored
