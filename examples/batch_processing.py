"""Batch Processing: one prompt over every file of a folder, spread over all instances.

``GleitzeitClient.batch_process`` reads the files matching ``pattern``, sends each one with the
prompt, keeps at most ``max_concurrent`` calls in flight, and returns one result per file (a
failed file does not stop the others).

    .venv/bin/python examples/batch_processing.py
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

from _servers import MODEL, servers

from gleitzeit_llm import GleitzeitClient

TOPICS = ["solar power", "tides", "volcanoes", "glaciers", "coral reefs", "deserts", "monsoons", "aurora"]


def write_documents(folder: Path) -> None:
    """A few text files to summarize (and one file that does not match the pattern)."""
    for number, topic in enumerate(TOPICS * 2, start=1):
        (folder / f"report-{number:02}.txt").write_text(f"Report {number} about {topic}.\n" * 20)
    (folder / "notes.md").write_text("Not a .txt file, so batch_process skips it.\n")


async def main() -> None:
    with servers(3, num_parallel=2) as instances, tempfile.TemporaryDirectory() as documents:
        write_documents(Path(documents))

        async with GleitzeitClient(ollama_config={"instances": instances}) as client:
            # Process multiple files in parallel across instances
            results = await client.batch_process(
                directory=documents,
                pattern="*.txt",
                method="llm/chat",
                prompt="Summarize this document",
                model=MODEL,
                max_concurrent=10,  # distributed across all instances
            )

    # One dict per file, in file name order: file, response, error, pool.
    for result in results:
        name = Path(result["file"]).name
        if result["error"]:
            print(f"{name}: FAILED {result['error']}")
        else:
            summary = " ".join(result["response"].split())
            print(f"{name} -> {result['pool']['instance_id']}: {summary[:100]}")

    per_instance = Counter(r["pool"]["instance_id"] for r in results if r["pool"])
    failed = sum(1 for r in results if r["error"])
    print(f"{len(results)} files, {failed} failed; per instance: {dict(sorted(per_instance.items()))}")


if __name__ == "__main__":
    asyncio.run(main())
