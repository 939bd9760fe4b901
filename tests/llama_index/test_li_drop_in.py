"""Swapping ``Ollama(model=..., base_url=...)`` for ``OllamaPool(model=..., instances=[...])`` in an
existing query engine and chat engine is the only change needed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.llms import LLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.llms.ollama import Ollama

from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool

ROOT = Path(__file__).resolve().parents[2]


def answer_with(llm: LLM, embed_model: OllamaPoolEmbedding, folder: Path) -> tuple[str, str, str]:
    """An application's existing code: index a folder, ask a query engine and a chat engine."""
    documents = SimpleDirectoryReader(str(folder)).load_data()
    index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)
    query = index.as_query_engine(llm=llm, similarity_top_k=2).query("Which instance has a GPU?")
    memory = ChatMemoryBuffer.from_defaults(token_limit=3000)  # in memory: no SQLite connection to close
    chat_engine = index.as_chat_engine(chat_mode="condense_plus_context", llm=llm, memory=memory)
    chat_engine.chat("Tell me about the pool.")
    follow_up = chat_engine.chat("And the CPU one?")
    streamed = index.as_query_engine(llm=llm, streaming=True).query("Who serves embeddings?")
    return str(query), str(follow_up), "".join(streamed.response_gen)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "gpu.txt").write_text("The gpu instance has an RTX 4090 and serves llama3.2.\n")
    (tmp_path / "cpu.txt").write_text("The cpu instance has 64 cores and serves small models.\n")
    (tmp_path / "embed.txt").write_text("Embeddings come from nomic-embed-text on every instance.\n")
    return tmp_path


@pytest.fixture
def close_loop_of_llama_index() -> Iterator[None]:
    """LlamaIndex's sync token counting runs coroutines on ``asyncio.get_event_loop()``, which leaves
    an open loop set on this thread; close it as ``asyncio.run`` would (else: ResourceWarning later)."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:  # none set: LlamaIndex ran its coroutines with asyncio.run
            return
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)


@pytest.mark.allow_hosts(["127.0.0.1"])
@pytest.mark.usefixtures("close_loop_of_llama_index")
def test_only_the_constructor_changes(
    pool: Callable[..., Any],
    make_llm: Callable[..., OllamaPool],
    make_embedding: Callable[..., OllamaPoolEmbedding],
    folder: Path,
) -> None:
    emulators, instances = pool(2, responder=lambda request: f"{request.model} answers {len(request.prompt)}")
    embed_model = make_embedding(instances=instances)

    before = Ollama(model="llama3.2", base_url=emulators[0].url, request_timeout=30.0)
    try:
        expected = answer_with(before, embed_model, folder)
    finally:
        before.client._client.close()
    # round_robin: five sequential calls reach both servers for certain (least_loaded breaks ties
    # between idle servers at random and sent all five to one of them about one run in 32).
    after = make_llm(
        model="llama3.2", instances=instances, request_timeout=30.0, load_balancing_strategy="round_robin"
    )
    assert answer_with(after, embed_model, folder) == expected
    assert all(text.startswith("llama3.2 answers") for text in expected)
    assert all(emu.requests_for("/api/chat") for emu in emulators)  # the pool spread the calls
    assert Settings._llm is None and Settings._embed_model is None  # nothing fell back to OpenAI


def test_importing_the_packages_stays_light() -> None:
    code = (
        "import sys\n"
        "import llama_index.llms.gleitzeit, llama_index.embeddings.gleitzeit\n"
        "assert 'llama_index.llms.gleitzeit.base' not in sys.modules\n"
        "from llama_index.llms.gleitzeit import OllamaPool\n"
        "from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported without the handler'\n"
        "from llama_index.llms.gleitzeit import PrometheusEventHandler\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_namespace_packages_have_no_shared_init_files() -> None:
    for dist, kind in (
        ("llama-index-llms-gleitzeit", "llms"),
        ("llama-index-embeddings-gleitzeit", "embeddings"),
    ):
        base = ROOT / "integrations" / dist / "llama_index"
        assert not (base / "__init__.py").exists() and not (base / kind / "__init__.py").exists()
        assert (base / kind / "gleitzeit" / "__init__.py").exists() and (
            base / kind / "gleitzeit" / "py.typed"
        ).exists()
