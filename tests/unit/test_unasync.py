"""The sync send chain and transport are generated from their async source (scripts/unasync.py):
a generated file that no longer matches its source fails here, with the diff to apply."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "unasync.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_sync_file_is_what_its_async_source_gives() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, f"run `make unasync`:\n{done.stdout}{done.stderr}"


def test_a_hand_edit_of_a_generated_file_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for async_dir, sync_dir in script.PACKAGES:
        shutil.copytree(ROOT / async_dir, tmp_path / async_dir)
        shutil.copytree(ROOT / sync_dir, tmp_path / sync_dir)
    assert script.main(["--check"], root=tmp_path) == 0
    edited = tmp_path / "gleitzeit_llm" / "_sync" / "calls.py"
    edited.write_text(edited.read_text().replace("time.sleep(wait)", "time.sleep(wait * 2)"))
    capsys.readouterr()

    assert script.main(["--check"], root=tmp_path) == 1
    report = capsys.readouterr().out
    assert "-        time.sleep(wait * 2)" in report
    assert "out of date: gleitzeit_llm/_sync/calls.py" in report


def test_the_rules_turn_the_async_forms_into_their_blocking_twins() -> None:
    source = (
        "async def _open_async(self):\n"
        "    async with self._client.stream() as response:\n"
        "        async for data in response.aiter_bytes():\n"
        "            await asyncio.sleep(0)\n"
        "    await self.manager.acquire(route)\n"
        "    return AsyncOllamaTransport, StopAsyncIteration, await _aclose(self._agen)\n"
    )
    assert _script().unasync(source, set()) == (
        "def _open_sync(self):\n"
        "    with self._client.stream() as response:\n"
        "        for data in response.iter_bytes():\n"
        "            time.sleep(0)\n"
        "    self.manager.acquire_sync(route)\n"
        "    return OllamaTransport, StopIteration, _close(self._gen)\n"
    )
