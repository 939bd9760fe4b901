"""OllamaPoolEmbeddings: embed many documents in parallel batches over the pool, then search them.

``embed_documents`` splits the texts into batches of ``batch_size``, sends the batches to the
pool's servers at the same time and returns the vectors in the input's order. The chat model
and the embeddings can share one pool (``pool=``).

    .venv/bin/python examples/langchain/embeddings.py
"""

from __future__ import annotations

import math
import os
from collections import Counter

from _common import servers

from gleitzeit_llm import OllamaPoolProvider
from langchain_gleitzeit import OllamaPoolEmbeddings

#: The embedding model (set GLEITZEIT_EXAMPLE_EMBED_MODEL for real servers that lack this one).
EMBED_MODEL = os.environ.get("GLEITZEIT_EXAMPLE_EMBED_MODEL", "").strip() or "nomic-embed-text"

DOCUMENTS = [
    f"{subject} {detail}"
    for subject in ("The blue sky", "Tax law", "A river delta", "Cats", "Volcanoes", "The stock market")
    for detail in ("explained simply.", "in ten facts.", "for beginners.", "and its history.")
]


def cosine(a: list[float], b: list[float]) -> float:
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms


def main() -> None:
    with servers(3, models=[EMBED_MODEL, "llama3.2"], loaded=[EMBED_MODEL]) as instances:
        pool = OllamaPoolProvider(instances=instances, load_balancing={"strategy": "round_robin"})
        served: Counter[str] = Counter()
        pool.events.subscribe(lambda e: served.update([e.instance]) if e.kind == "request_finished" else None)
        embeddings = OllamaPoolEmbeddings(model=EMBED_MODEL, pool=pool, batch_size=4)

        vectors = embeddings.embed_documents(DOCUMENTS)
        per_instance = dict(sorted(served.items()))
        print(f"{len(vectors)} documents, {len(vectors[0])} dimensions, batches per instance: {per_instance}")

        query = embeddings.embed_query("Why is the sky blue?")
        best = max(range(len(DOCUMENTS)), key=lambda i: cosine(query, vectors[i]))
        print(f"closest to 'Why is the sky blue?': {DOCUMENTS[best]!r}")
        pool.close_sync()


if __name__ == "__main__":
    main()
