"""Write the sync twins of the async send chain: ``python scripts/unasync.py [--check]``.

Every ``.py`` file under an ``_async`` package below is the one hand-written source; the file of the
same name under the sibling ``_sync`` package is generated from it by the substitutions in
``RULES`` (``async def`` -> ``def``, ``await`` dropped, ``AsyncFoo`` -> ``Foo``, ...), then sorted and
formatted by ruff, so the generated file passes ``make lint`` like any other. This is what httpcore
does (its ``scripts/unasync.py``), with two differences: the check compares whole files (so a line
added to or removed from one side is caught too), and the output goes through ruff (a line that
loses its ``await`` may fit on one line now, which ruff format would otherwise change).

``--check`` writes nothing and exits 1 when a generated file is not what the source gives today;
``tests/unit/test_unasync.py`` runs it, so a forgotten regeneration fails ``make test``.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (async package, generated sync package), relative to the repository root.
PACKAGES = [
    ("gleitzeit_llm/ollama/_async", "gleitzeit_llm/ollama/_sync"),
    ("gleitzeit_llm/_async", "gleitzeit_llm/_sync"),
]

# Applied in order to the whole text, as regular expressions; every rule must be used by some
# file (a rule no source needs any more is dead weight, and usually a sign the source changed).
RULES: list[tuple[str, str]] = [
    # statements
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait asyncio\.sleep\(", "time.sleep("),
    (r"\bawait ", ""),
    # names of the async protocols and of their sync counterparts
    (r"\bAsyncGenerator\[(.+?), None\]", r"Generator[\1, None, None]"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\basynccontextmanager\b", "contextmanager"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\baclose\b", "close"),
    (r"\b_aclose\b", "_close"),
    (r"\baread\b", "read"),
    (r"\baiter_bytes\b", "iter_bytes"),
    (r"\b(_?)agen\b", r"\1gen"),
    # AsyncOllamaTransport, AsyncIterator, httpx.AsyncClient, tenacity's AsyncRetrying, ...
    (r"\bAsync([A-Z]\w*)", r"\1"),
    # our own names: async_http_transport(), _run_async(), _async_transport(), manager.acquire()
    (r"\b(_?)async_(\w+)", r"\1sync_\2"),
    (r"_async\b", "_sync"),
    (r"\.acquire\(", ".acquire_sync("),
]
_COMPILED = [(re.compile(pattern), replacement) for pattern, replacement in RULES]

HEADER = (
    "# Generated from {source} by scripts/unasync.py, do not edit.\n"
    "# Change that file instead, then run `make unasync`.\n"
)


def unasync(text: str, used: set[int]) -> str:
    """``text`` with every rule applied; the indexes of the rules that changed something go to ``used``."""
    for index, (pattern, replacement) in enumerate(_COMPILED):
        text, count = pattern.subn(replacement, text)
        if count:
            used.add(index)
    return text


def _ruff(args: list[str], text: str, filename: Path, root: Path) -> str:
    # The project's ruff settings apply (found from --stdin-filename); output on stdout.
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(filename), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff {' '.join(args)} failed on the generated {filename}:\n{done.stderr}")
    return done.stdout


def generate(source: Path, target: Path, used: set[int], root: Path = ROOT) -> str:
    """The text ``target`` should have: the unasynced ``source``, import-sorted and formatted."""
    text = HEADER.format(source=source.relative_to(root).as_posix()) + unasync(source.read_text(), used)
    # F401: an import only the async side needs (asyncio) goes; I: renamed imports are re-sorted.
    text = _ruff(["check", "--quiet", "--fix-only", "--select", "F401,I"], text, target, root)
    return _ruff(["format", "--quiet"], text, target, root)


def pairs(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """Every (async source, generated sync file) below ``root``."""
    found = []
    for async_dir, sync_dir in PACKAGES:
        for source in sorted((root / async_dir).glob("*.py")):
            found.append((source, root / sync_dir / source.name))
    return found


def main(argv: list[str], root: Path = ROOT) -> int:
    """``--check``: report stale generated files (exit 1) instead of writing them."""
    check = "--check" in argv
    used: set[int] = set()
    stale = []
    for source, target in pairs(root):
        expected = generate(source, target, used, root)
        actual = target.read_text() if target.exists() else ""
        if actual == expected:
            continue
        stale.append(target)
        if check:
            name = target.relative_to(root).as_posix()
            sys.stdout.writelines(
                difflib.unified_diff(
                    actual.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    f"{name} (committed)",
                    f"{name} (generated from {source.relative_to(root).as_posix()})",
                )
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(expected)
            print(f"wrote {target.relative_to(root)}")
    unused = [RULES[i] for i in range(len(RULES)) if i not in used]
    if unused:
        print(f"rules no source uses (remove them): {unused}")
        return 1
    if check and stale:
        print(f"out of date: {', '.join(str(t.relative_to(root)) for t in stale)}; run `make unasync`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
