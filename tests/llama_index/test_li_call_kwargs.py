"""Keyword arguments LlamaIndex's core components pass to any LLM: ``OllamaPool`` takes them as
``Ollama`` does (side by side on the same emulator), maps ``max_tokens`` and warns once about the rest."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.extractors import DocumentContextExtractor
from llama_index.core.llms import LLM
from llama_index.core.schema import Document, NodeRelationship, TextNode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.llms.ollama import Ollama

from gleitzeit_llm.testing import OllamaEmulator
from llama_index.llms.gleitzeit import OllamaPool, _kwargs

HELLO = [ChatMessage(role="user", content="Hello!")]
CHUNKS = ["The gpu instance has an RTX 4090.", "The cpu instance has 64 cores.", "Both serve llama3.2."]


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    """Each test sees the one-time warnings anew."""
    _kwargs.forget_warnings()
    yield
    _kwargs.forget_warnings()


def context_of(request: Any) -> str:
    return f"context of {request.prompt.split('<chunk>')[-1].split('</chunk>')[0]}"


async def contexts(llm: LLM) -> list[str | None]:
    """What an application's DocumentContextExtractor makes of three chunks of one document."""
    document = Document(text=" ".join(CHUNKS))
    docstore = SimpleDocumentStore()
    docstore.add_documents([document])
    nodes = [
        TextNode(text=chunk, relationships={NodeRelationship.SOURCE: document.as_related_node_info()})
        for chunk in CHUNKS
    ]
    extractor = DocumentContextExtractor(docstore=docstore, llm=llm, max_output_tokens=64)
    return [metadata.get("context") for metadata in await extractor.aextract(nodes)]


async def test_document_context_extractor_works_as_with_ollama(
    ollama_emulator: OllamaEmulator, make_llm: Callable[..., OllamaPool]
) -> None:
    ollama_emulator.responder = context_of
    upstream = Ollama(model="llama3.2", base_url=ollama_emulator.url, request_timeout=30.0)
    try:
        expected = await contexts(upstream)
    finally:  # Ollama never closes its clients (the sync one asked /api/show)
        upstream.client._client.close()
        await upstream.async_client._client.aclose()
    assert expected == [f"context of {chunk}" for chunk in CHUNKS]
    ollama_emulator.clear_log()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await contexts(make_llm(base_url=ollama_emulator.url)) == expected
    requests = ollama_emulator.requests_for("/api/chat")
    assert len(requests) == 3 and all(r.options["num_predict"] == 64 for r in requests)  # max_tokens
    ignored = [str(w.message) for w in caught if "extra_headers" in str(w.message)]
    assert len(ignored) == 1 and "ignores" in ignored[0]  # once, not once per call


def test_max_tokens_is_num_predict_and_a_keyword_num_predict_wins(
    ollama_emulator: OllamaEmulator, make_llm: Callable[..., OllamaPool]
) -> None:
    llm = make_llm(base_url=ollama_emulator.url, additional_kwargs={"num_predict": 5})
    llm.chat(HELLO, max_tokens=7)
    llm.complete("hi", max_tokens=7, num_predict=9)
    list(llm.stream_chat(HELLO, max_tokens=7, options={"num_predict": 3}))
    assert [r.options["num_predict"] for r in ollama_emulator.requests_for("/api/chat")] == [7, 9, 7]


async def test_what_ollama_has_no_use_for_is_ignored_with_one_warning_per_name(
    ollama_emulator: OllamaEmulator, make_llm: Callable[..., OllamaPool]
) -> None:
    llm = make_llm(base_url=ollama_emulator.url)
    ignored = {"extra_headers": {"x": "1"}, "extra_body": {}, "strict": True, "tool_choice": "auto"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llm.chat(HELLO, **ignored)
        await llm.achat(HELLO, **ignored)
        list(llm.stream_complete("hi", **ignored))
    assert sorted(str(w.message).split("=")[0].split()[-1] for w in caught) == sorted(ignored)
    bodies = [r.body for r in ollama_emulator.requests_for("/api/chat")]
    assert len(bodies) == 3 and all(set(b) <= {"model", "messages", "options", "stream"} for b in bodies)
    with pytest.raises(TypeError, match="'frobnicate'"):  # a typo still fails loudly
        llm.chat(HELLO, frobnicate=True)
